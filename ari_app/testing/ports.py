"""Free loopback ports for private Asterisk instances and SIPp."""

from __future__ import annotations

import random
import socket
from collections import deque

_used: set[int] = set()


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port free for both TCP and UDP on loopback (SIP is UDP, ARI is TCP)."""
    for _ in range(200):
        with socket.socket(socket.AF_INET, kind) as s:
            s.bind((host, 0))
            port = int(s.getsockname()[1])
        if port in _used or not _free_both(port, host):
            continue
        _used.add(port)
        return port
    raise RuntimeError("no free loopback port found")


def free_listen_port(host: str = "127.0.0.1", span: int = 2) -> int:
    """A port (and the ``span - 1`` after it) free for TCP and UDP, below both the kernel's
    ephemeral range and the RTP blocks: a client connecting meanwhile (to ARI, to PostgreSQL)
    is never handed it, as it can be a port from ``free_port``. For programs that bind
    several transports on one port (baresip: UDP, TCP, TLS)."""
    for _ in range(200):
        port = random.randrange(12000, 20000 - span)
        block = range(port, port + span)
        if any(p in _used for p in block) or not all(_free_both(p, host) for p in block):
            continue
        _used.update(block)
        return port
    raise RuntimeError("no free loopback port found below the ephemeral range")


_recent_media: deque[int] = deque(maxlen=512)


def free_media_ports(host: str = "127.0.0.1", span: int = 4) -> int:
    """The first of ``span`` UDP ports free on loopback, for SIPp's ``-mp``: SIPp binds audio
    RTP there and video RTP two above (``errno 98`` on the video port failed a CI run when only
    the first was checked). Below the kernel's ephemeral range and the test Asterisks' RTP
    blocks (``rtp_range``), so no client socket or Asterisk stream takes them meanwhile; not
    reserved for the whole run (a long run would use them up), only skipped while recent."""
    for _ in range(400):
        port = random.randrange(12000, 20000 - span, span)
        if port in _recent_media or any(p in _used for p in range(port, port + span)):
            continue
        if all(_free_udp(p, host) for p in range(port, port + span)):
            _recent_media.append(port)
            return port
    raise RuntimeError("no free block of loopback UDP ports for SIPp media")


def _free_udp(port: int, host: str) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_both(port: int, host: str) -> bool:
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                return False
    return True


def rtp_range(size: int = 400) -> tuple[int, int]:
    """A block of UDP ports for one Asterisk's RTP, picked at random.

    Not reserved: Asterisk binds a free port inside its range for every stream, so two
    instances whose ranges overlap still work; recording the blocks would only exhaust them
    over a long test run.
    """
    start = random.randrange(20000, 60000 - size, 2)
    return start, start + size - 1
