"""The SIPp talk pcap: valid G.711 A-law and a pcap SIPp can read."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from ari_app.testing.media import alaw, speech_pcap


@pytest.mark.parametrize(("linear", "code"), [(0, 0xD5), (-1, 0x55), (1000, 0xFA), (-1000, 0x7A),
                                              (32767, 0xAA), (-32768, 0x2A)])
def test_alaw_matches_g711_reference_values(linear: int, code: int) -> None:
    assert alaw(linear) == code


def test_talk_pcap_has_fifty_rtp_frames_a_second(tmp_path: Path) -> None:
    data = speech_pcap(tmp_path / "t.pcap", seconds=2).read_bytes()
    assert struct.unpack("<I", data[:4])[0] == 0xA1B2C3D4
    count, offset = 0, 24
    while offset < len(data):
        length = struct.unpack("<I", data[offset + 8:offset + 12])[0]
        rtp = data[offset + 16 + 42:offset + 16 + length]
        assert rtp[0] == 0x80 and rtp[1] == 8 and len(rtp) == 172
        count, offset = count + 1, offset + 16 + length
    assert count == 100
