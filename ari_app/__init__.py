"""Siaga 112: the ARI application that runs a regency's 112 emergency line."""

__version__ = "0.1.0"
