"""Media for SIPp callers: a pcap of A-law RTP that sounds like speech (bursts of voiced tone).

SIPp's stock g711a.pcap lasts a few seconds; tests and bench need a caller who keeps talking.
"""

from __future__ import annotations

import math
import random
import struct
from pathlib import Path

_SEG_END = (0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF)  # segment ends, 13-bit


def alaw(sample: int) -> int:
    """ITU-T G.711 A-law encoding of one 16-bit sample."""
    sample >>= 3
    if sample >= 0:
        mask = 0xD5
    else:
        mask = 0x55
        sample = -sample - 1
    seg = next((i for i, end in enumerate(_SEG_END) if sample <= end), 8)
    if seg >= 8:
        return 0x7F ^ mask
    aval = seg << 4
    aval |= (sample >> 1) & 0xF if seg < 2 else (sample >> seg) & 0xF
    return aval ^ mask


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total: int = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def speech_pcap(path: Path, seconds: float = 40.0, *, payload_type: int = 8,
                silent: bool = False) -> Path:
    """Write a pcap of RTP (20 ms A-law frames): talk bursts, or digital silence if ``silent``."""
    rng = random.Random(112)
    frames = int(seconds * 50)
    out = bytearray(struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1))
    seq, ts, phase = rng.randrange(65535), rng.randrange(1 << 31), 0.0
    ssrc = rng.randrange(1 << 32)
    for n in range(frames):
        voiced = not silent and (n // 40) % 3 != 2  # 0.8 s talk, 0.4 s pause
        samples = bytearray()
        for _ in range(160):
            phase += 2 * math.pi * 220 / 8000
            value = int(9000 * math.sin(phase) + rng.uniform(-800, 800)) if voiced else 0
            samples.append(alaw(value))
        rtp = struct.pack("!BBHII", 0x80, payload_type & 0x7F, seq & 0xFFFF, ts & 0xFFFFFFFF,
                          ssrc) + bytes(samples)
        seq, ts = seq + 1, ts + 160
        udp = struct.pack("!HHHH", 6000, 6000, 8 + len(rtp), 0) + rtp
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), n & 0xFFFF, 0, 64, 17, 0,
                         bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]))
        ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
        frame = b"\0" * 12 + b"\x08\x00" + ip + udp
        usec = n * 20000
        out += struct.pack("<IIII", usec // 1_000_000, usec % 1_000_000, len(frame), len(frame))
        out += frame
    path.write_bytes(bytes(out))
    return path
