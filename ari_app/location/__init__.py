"""Caller location: AML (SMS and HTTPS), PIDF-LO and Asterisk geolocation, cell ids, numbers."""
