"""The SIP edge in front of several nodes: Kamailio, rendered and run like our Asterisk."""
