"""A real softphone for tests: Debian's baresip-core, registered as an operator over SIP TLS
with SRTP required, answering calls by itself and sending a tone from a WAV file."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

from ari_app.testing.ports import free_listen_port

log = logging.getLogger(__name__)

BARESIP = shutil.which("baresip") or "/usr/bin/baresip"
MODULES = Path("/usr/lib/baresip/modules")


def tone_wav(path: Path, seconds: int = 60) -> Path:
    """An 8 kHz mono tone (what G.711 carries), made with sox."""
    if not path.exists():
        subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(path), "synth",
                        str(seconds), "sine", "440", "vol", "0.5"], check=True, timeout=60)
    return path


class Baresip:
    """One baresip process with one account; output is kept for assertions."""

    def __init__(self, user: str, password: str, *, host: str, tls_port: int, ca_file: Path,
                 rtp_ports: tuple[int, int]) -> None:
        self.user, self.password, self.host, self.tls_port = user, password, host, tls_port
        self.ca_file, self.rtp_ports = ca_file, rtp_ports
        self.dir = Path(tempfile.mkdtemp(prefix="baresip-"))
        self.sip_port = free_listen_port()
        self.proc: asyncio.subprocess.Process | None = None
        self.output: list[str] = []
        self._reader: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

    def write_config(self) -> None:
        tone = tone_wav(self.dir / "tone.wav")
        lo, hi = self.rtp_ports
        (self.dir / "config").write_text(f"""\
poll_method		epoll
sip_listen		127.0.0.1:{self.sip_port}
sip_cafile		{self.ca_file}
sip_trans_def		tls
audio_player		aubridge,nowhere
audio_source		aufile,{tone}
audio_alert		aubridge,nowhere
ausrc_srate		8000
auplay_srate		8000
ausrc_channels		1
auplay_channels		1
rtp_ports		{lo}-{hi}
rtp_stats		yes
module_path		{MODULES}
module			g711.so
module			aufile.so
module			aubridge.so
module			srtp.so
module_app		account.so
module_app		menu.so
""")
        (self.dir / "accounts").write_text(
            f"<sip:{self.user}@{self.host}:{self.tls_port};transport=tls>"
            f";auth_pass={self.password};mediaenc=srtp-mand;answermode=auto;regint=300"
            ";audio_codecs=PCMA/8000/1,PCMU/8000/1\n")
        (self.dir / "contacts").write_text("")

    async def start(self) -> None:
        self.write_config()
        self.proc = await asyncio.create_subprocess_exec(
            BARESIP, "-f", str(self.dir), "-v", stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=self.dir)
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                break
            text = line.decode(errors="replace").rstrip()
            self.output.append(text)
            self._changed.set()
        self._changed.set()  # exited: wake a waiter so it can say so

    async def wait_for(self, needle: str, timeout: float = 15.0) -> str:
        """The first output line holding ``needle`` (waits for it, bounded by ``timeout``)."""
        async def scan() -> str:
            seen = 0
            while True:
                self._changed.clear()  # before scanning: a line read meanwhile sets it again
                for line in self.output[seen:]:
                    if needle in line:
                        return line
                seen = len(self.output)
                if self._reader is not None and self._reader.done():
                    raise AssertionError(f"baresip exited before {needle!r}:\n"
                                         + self.text()[-3000:])
                await self._changed.wait()

        try:
            return await asyncio.wait_for(scan(), timeout)
        except TimeoutError:
            raise AssertionError(f"baresip: no {needle!r} within {timeout} s:\n"
                                 + self.text()[-3000:]) from None

    def text(self) -> str:
        return "\n".join(self.output)

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.terminate()
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
        shutil.rmtree(self.dir, ignore_errors=True)
