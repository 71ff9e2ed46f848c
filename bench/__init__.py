"""Load benchmark: the same SIPp call mix against the app and a pure-dialplan twin."""
