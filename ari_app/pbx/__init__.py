"""Our Asterisk: render its configuration under var/, start it, stop it."""
