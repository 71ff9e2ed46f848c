"""Operator phones on SIP TLS with SRTP: a real softphone (Debian's baresip) registers over TLS,
answers a 112 call, and the audio on its leg is SRTP (captured on loopback: no plain RTP),
while the carrier leg stays plain UDP/RTP as carriers expect."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import re
import socket
import ssl
import struct
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from ari_app.clock import Clock
from ari_app.config import Site
from ari_app.routing.operators import add_operator, add_shift
from ari_app.testing.baresip import Baresip
from ari_app.testing.ports import free_port
from ari_app.testing.sipp import SippResult, SippRun, run_sipp
from ari_app.tickets.db import make_engine, sessions
from ari_app.tls import ensure_pair, fingerprint
from tests.integration.conftest import StackFactory

pytestmark = pytest.mark.integration

PASSWORD = "tls-op-secret-1"
PHONE_RTP = (38000, 38098)  # the softphone's RTP ports, so its leg can be told apart


class LoopbackCapture:
    """UDP datagrams on lo (AF_PACKET, as root): (source port, destination port, payload)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.ntohs(0x0003))
        self.sock.bind(("lo", 0))
        self.sock.settimeout(0.2)
        self.packets: list[tuple[int, int, bytes]] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self.stop.is_set() and len(self.packets) < 200_000:
            try:
                frame, meta = self.sock.recvfrom(65535)
            except TimeoutError:
                continue
            if meta[2] == socket.PACKET_OUTGOING:
                continue  # lo shows every packet twice: keep the incoming copy
            if len(frame) < 14 + 20 + 8 or frame[12:14] != b"\x08\x00" or frame[14 + 9] != 17:
                continue
            ihl = (frame[14] & 0x0F) * 4
            sport, dport = struct.unpack("!HH", frame[14 + ihl:14 + ihl + 4])
            self.packets.append((sport, dport, frame[14 + ihl + 8:]))

    @contextmanager
    def running(self) -> Iterator[LoopbackCapture]:
        self.thread.start()
        try:
            yield self
        finally:
            self.stop.set()
            self.thread.join(5)
            self.sock.close()


def rtp_audio(payload: bytes) -> bool:
    """An RTP (or SRTP: its header is clear) packet carrying G.711 (payload type 0 or 8)."""
    return len(payload) >= 12 and payload[0] >> 6 == 2 and payload[1] & 0x7F in (0, 8)


async def seed_op1(db_url: str, site: Site, *, clock: Clock | None = None,
                   on_shift: bool = True) -> None:
    """Operator op1 with a known SIP password (the softphone needs it), on shift now."""
    now = (clock or Clock()).now()
    engine = make_engine(db_url)
    try:
        async with sessions(engine)() as s, s.begin():
            await add_operator(s, site, "op1", "Sari", now, password=PASSWORD)
            if on_shift:
                await add_shift(s, "op1", now - timedelta(hours=1), now + timedelta(hours=8))
    finally:
        await engine.dispose()


def operator_rtp_counts(stats: str, operator: str) -> tuple[int, int]:
    """Received and sent RTP packet counts of the operator's channel in `pjsip show
    channelstats` (columns after the codec: count, lost, pct, jitter, then the same sent)."""
    for line in stats.splitlines():
        if f"/{operator}-" in line or f" {operator}-" in line:
            tokens = line.split()
            for i, token in enumerate(tokens):
                if token in ("alaw", "ulaw") and len(tokens) > i + 5:
                    return int(tokens[i + 1]), int(tokens[i + 5])
    return 0, 0


async def test_baresip_registers_over_tls_answers_a_112_call_and_its_audio_is_srtp(
        make_stack: StackFactory, db_url: str, batola: Site) -> None:
    site = dataclasses.replace(batola, asterisk=dataclasses.replace(
        batola.asterisk, operator_tls="on", tls_port=free_port()))
    clock = Clock()
    await seed_op1(db_url, site, clock=clock)
    stack = await make_stack(site, clock=clock)
    etc = stack.var_dir / "asterisk" / "etc"
    pjsip = (etc / "pjsip.conf").read_text()
    operators = (etc / "pjsip_operators.conf").read_text()   # the live-reloaded operator file
    assert "protocol = tls" in pjsip and "media_encryption = sdes" in operators
    carrier = pjsip[pjsip.index("[carrier]"):pjsip.index("[carrier]\ntype = aor")]
    assert "media_encryption" not in carrier and "transport-tls" not in carrier
    phone = Baresip("op1", PASSWORD, host="127.0.0.1", tls_port=stack.site.asterisk.tls_port,
                    ca_file=stack.var_dir / "secrets" / "sip-tls.crt", rtp_ports=PHONE_RTP)
    await phone.start()
    try:
        await phone.wait_for("{0/TLS/v4} 200 OK")  # registered over TLS, server cert verified
        contacts = await asyncio.to_thread(stack.asterisk.cli, "pjsip show aor op1")
        assert "transport=tls" in contacts.lower(), contacts
        with LoopbackCapture().running() as capture:
            caller = asyncio.create_task(stack.call("caller_key.xml", template={"digit": "2"}))
            await phone.wait_for("Call established", 40)
            await phone.wait_for("mediaenc event 'Secure' (audio,AES_CM_128_HMAC_SHA1_80)")
            stats = ""
            for _ in range(40):  # bounded: until the operator leg has carried audio both ways
                stats = await asyncio.to_thread(stack.asterisk.cli, "pjsip show channelstats")
                rx, tx = operator_rtp_counts(stats, "op1")
                if min(rx, tx) > 50:
                    break
                await asyncio.sleep(0.25)
            await asyncio.to_thread(stack.asterisk.cli, "channel request hangup all")
            result = await caller
        assert result.ok, result.stdout[-2000:]
    finally:
        await phone.stop()
    rx, tx = operator_rtp_counts(stats, "op1")
    assert rx > 50 and tx > 50, stats
    # Only this stack's media: one end in its Asterisk's RTP range (the capture sees every
    # test's loopback traffic; another test's plain RTP may use a port in the phone's range).
    ours = range(stack.site.asterisk.rtp_start, stack.site.asterisk.rtp_end + 1)
    phone_ports = range(PHONE_RTP[0], PHONE_RTP[1] + 1)
    media = [(sport, dport, p) for sport, dport, p in capture.packets
             if rtp_audio(p) and (sport in ours or dport in ours)]
    phone_leg = [p for sport, dport, p in media if sport in phone_ports or dport in phone_ports]
    other = [p for sport, dport, p in media if sport not in phone_ports and dport not in phone_ports]
    sizes = Counter(len(p) for p in phone_leg)
    # 20 ms of G.711 is 160 bytes: plain RTP is 12 + 160; SRTP adds its 10-byte auth tag
    assert len(phone_leg) > 100, sizes
    assert sizes[172] == 0 and sizes[182] >= 0.95 * len(phone_leg), sizes
    assert any(len(p) == 172 for p in other), Counter(len(p) for p in other)  # carrier: plain RTP
    stack_tickets = await stack.tickets()
    assert stack_tickets[0].operator == "op1"


class TlsSip:
    """Hand-written SIP over TLS: raw requests where the test needs to see each header and the
    certificate's own bytes (SIPp's TLS cases are in the SIPp test below)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, port: int) -> None:
        self.reader, self.writer, self.port, self.cseq = reader, writer, port, 0
        self.local = writer.get_extra_info("sockname")

    async def request(self, method: str, uri: str, *, auth: str = "", body: str = "",
                      call_id: str = "tls-test-1") -> tuple[int, dict[str, str]]:
        self.cseq += 1
        host, lport = self.local[0], self.local[1]
        lines = [f"{method} {uri} SIP/2.0",
                 f"Via: SIP/2.0/TLS {host}:{lport};branch=z9hG4bK-{self.cseq}-{call_id};rport",
                 f"From: <sip:op1@127.0.0.1>;tag=t{call_id}",
                 f"To: <{uri if method == 'INVITE' else 'sip:op1@127.0.0.1'}>",
                 f"Call-ID: {call_id}", f"CSeq: {self.cseq} {method}",
                 f"Contact: <sip:op1@{host}:{lport};transport=tls>", "Max-Forwards: 70",
                 "Expires: 60"]
        if auth:
            lines.append(f"Authorization: {auth}")
        if body:
            lines.append("Content-Type: application/sdp")
        lines.append(f"Content-Length: {len(body.encode())}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n" + body).encode())
        await self.writer.drain()
        while True:  # skip provisional answers
            status, headers = await self._response()
            if status >= 200:
                return status, headers

    async def _response(self) -> tuple[int, dict[str, str]]:
        head = (await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), 10)).decode()
        first, *rest = head.split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in
                   (line.partition(":") for line in rest if line)}
        length = int(headers.get("content-length", "0"))
        if length:
            await self.reader.readexactly(length)
        return int(first.split()[1]), headers


def digest(challenge: str, method: str, uri: str, password: str) -> str:
    fields = dict(re.findall(r'(\w+)="([^"]*)"', challenge))
    ha1 = hashlib.md5(f"op1:{fields['realm']}:{password}".encode()).hexdigest()
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    nc, cnonce = "00000001", "abcdef01"
    response = hashlib.md5(f"{ha1}:{fields['nonce']}:{nc}:{cnonce}:auth:{ha2}".encode()).hexdigest()
    return (f'Digest username="op1", realm="{fields["realm"]}", nonce="{fields["nonce"]}", '
            f'uri="{uri}", response="{response}", algorithm=MD5, qop=auth, nc={nc}, '
            f'cnonce="{cnonce}"' + (f', opaque="{fields["opaque"]}"' if "opaque" in fields else ""))


PLAIN_SDP = ("v=0\r\no=op 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
             "m=audio 39000 RTP/AVP 8\r\na=rtpmap:8 PCMA/8000\r\n")


async def test_tls_signalling_needs_the_certificate_and_digest_and_refuses_plain_rtp(
        make_stack: StackFactory, db_url: str, jepara: Site) -> None:
    site = dataclasses.replace(jepara, asterisk=dataclasses.replace(
        jepara.asterisk, operator_tls="on", tls_port=free_port()))
    await seed_op1(db_url, site, on_shift=False)
    stack = await make_stack(site, start_app=False)
    cert = stack.var_dir / "secrets" / "sip-tls.crt"
    port = stack.site.asterisk.tls_port

    untrusted = ssl.create_default_context()  # the system CAs only: our self-signed cert is not one
    with pytest.raises(ssl.SSLCertVerificationError):
        await asyncio.open_connection("127.0.0.1", port, ssl=untrusted)
    ctx = ssl.create_default_context(cafile=str(cert))
    reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=ctx,
                                                   server_hostname="127.0.0.1")
    try:
        tls_object = writer.get_extra_info("ssl_object")
        assert tls_object.version() in ("TLSv1.2", "TLSv1.3")
        der = tls_object.getpeercert(binary_form=True)
        shown = hashlib.sha256(der).hexdigest().upper()
        assert fingerprint(cert).replace(":", "") == shown
        sip = TlsSip(reader, writer, port)
        uri = f"sip:127.0.0.1:{port};transport=tls"
        status, headers = await sip.request("REGISTER", uri)
        assert status == 401 and 'realm="asterisk"' in headers["www-authenticate"]
        status, headers = await sip.request(
            "REGISTER", uri, auth=digest(headers["www-authenticate"], "REGISTER", uri, "wrong-pass"))
        assert status in (401, 403)
        status, headers = await sip.request("REGISTER", uri)
        status, _ = await sip.request(
            "REGISTER", uri, auth=digest(headers["www-authenticate"], "REGISTER", uri, PASSWORD))
        assert status == 200
        invite_uri = f"sip:113@127.0.0.1:{port};transport=tls"
        status, headers = await sip.request("INVITE", invite_uri, body=PLAIN_SDP, call_id="inv-1")
        assert status == 401
        status, _ = await sip.request(
            "INVITE", invite_uri, body=PLAIN_SDP, call_id="inv-1",
            auth=digest(headers["www-authenticate"], "INVITE", invite_uri, PASSWORD))
        assert status == 488  # SRTP is required: a phone offering plain RTP is refused
    finally:
        writer.close()


async def test_sipp_over_tls_registers_with_its_digest_and_is_refused_a_wrong_one_or_a_fake_cert(
        make_stack: StackFactory, db_url: str, jepara: Site, tmp_path: Path) -> None:
    """SIPp's own TLS transport (`-t l1`, verifying the server with `-tls_ca`): the phone's
    REGISTER over TLS with the right digest lands (the contact is a TLS one), a wrong password
    is refused, and a phone that trusts another certificate never gets through the handshake."""
    site = dataclasses.replace(jepara, asterisk=dataclasses.replace(
        jepara.asterisk, operator_tls="on", tls_port=free_port()))
    await seed_op1(db_url, site, on_shift=False)
    stack = await make_stack(site, start_app=False)
    cert = stack.var_dir / "secrets" / "sip-tls.crt"
    other = ensure_pair(tmp_path, "someone-else", ["127.0.0.1"]).cert  # a self-signed impostor CA

    async def register(password: str, ca: Path) -> SippResult:
        return await run_sipp(SippRun(
            scenario="operator_register.xml", target_port=site.asterisk.tls_port, transport="l1",
            timeout_s=10, extra_args=["-tls_ca", str(ca)],
            template={"user": "op1", "password": password, "contact_port": str(free_port())}))

    registered = await register(PASSWORD, cert)
    assert registered.ok, registered.errors or registered.stdout[-2000:]
    # The registrar's 200 lists the binding it made: a TLS contact. (Asterisk drops a binding
    # made over TLS when that connection closes, as it does when SIPp exits: read the answer.)
    log = "".join(p.read_text(errors="replace") for p in registered.workdir.glob("*messages.log"))
    assert re.search(r"Contact: <sip:op1@127\.0\.0\.1:\d+;transport=TLS>;expires=\d+", log), log
    wrong = await register("not-the-password", cert)
    assert not wrong.ok and wrong.successful == 0
    impostor = await register(PASSWORD, other)
    assert not impostor.ok and impostor.successful == 0
