"""Harness shared by tests/ and bench/: private Asterisk on free ports, SIPp runner."""
