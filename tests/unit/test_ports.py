"""Loopback ports for SIPp's media: the whole block SIPp binds is free, not only its first port."""

from __future__ import annotations

import random
import socket
from collections import deque
from collections.abc import Iterator

import pytest

from ari_app.testing import ports


def test_a_block_whose_video_port_is_taken_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    start = ports.free_media_ports()
    assert 12000 <= start < 20000 and start % 4 == 0
    video = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    video.bind(("127.0.0.1", start + 2))  # what SIPp's video RTP would bind
    try:
        picks: Iterator[int] = iter([start, start + 4])
        monkeypatch.setattr(ports, "_recent_media", deque(maxlen=512))  # not skipped as recent
        monkeypatch.setattr(random, "randrange", lambda *_a: next(picks))
        got = ports.free_media_ports()
    finally:
        video.close()
    assert got == start + 4  # the first block's audio port was free, its video port was not


def test_a_block_just_handed_out_is_not_handed_out_again() -> None:
    handed = [ports.free_media_ports() for _ in range(200)]
    assert len(set(handed)) == len(handed)
    for start in handed[-5:]:  # each port of the block binds now
        for port in range(start, start + 4):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
                s.bind(("127.0.0.1", port))
