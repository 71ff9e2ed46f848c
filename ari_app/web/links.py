"""Signed, expiring agency links: /ack/<token> lets an agency acknowledge and resolve one notification."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from datetime import datetime, timedelta


class LinkError(Exception):
    pass


class LinkSigner:
    def __init__(self, key: str, ttl: timedelta = timedelta(days=7)) -> None:
        self.key, self.ttl = key.encode(), ttl

    def _mac(self, body: str) -> str:
        digest = hmac.new(self.key, f"ack:{body}".encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def sign(self, notification_id: int, now: datetime) -> str:
        body = f"{notification_id}.{int((now + self.ttl).timestamp())}"
        return f"{body}.{self._mac(body)}"

    def verify(self, token: str, now: datetime) -> int:
        """The notification id the token stands for; LinkError if forged, damaged or expired."""
        # ASCII digits only ("²".isdigit() is true but int() refuses it), a MAC in base64url
        # (compare_digest refuses non-ASCII str); ids and expiries fit a 64-bit integer.
        parts = token.split(".")
        if (len(parts) != 3 or not re.fullmatch(r"[0-9]{1,18}", parts[0])
                or not re.fullmatch(r"[0-9]{1,18}", parts[1])
                or not re.fullmatch(r"[A-Za-z0-9_\-]{1,64}", parts[2])):
            raise LinkError("this link is damaged")
        body = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(parts[2], self._mac(body)):
            raise LinkError("this link is not valid")
        if now.timestamp() > int(parts[1]):
            raise LinkError("this link has expired: ask the 112 centre for a new one")
        return int(parts[0])

    def form_token(self, token: str) -> str:
        """CSRF field for the link's own form (the link itself is the credential)."""
        return self._mac("form:" + token)
