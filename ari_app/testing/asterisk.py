"""A private Asterisk on free loopback ports, rendered under a temp dir, for tests and bench."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable
from pathlib import Path

from ari_app.config import Site
from ari_app.pbx.process import AsteriskProcess, cli
from ari_app.pbx.render import OperatorEndpoint, RenderResult, render
from ari_app.testing.ports import free_listen_port, rtp_range

log = logging.getLogger(__name__)


def on_free_ports(site: Site, bind: str = "127.0.0.1") -> Site:
    """The site on free ports of one loopback address (each node of a test its own: 127.0.0.11...)."""
    # Listening ports below the kernel's ephemeral range and every test Asterisk's RTP block
    # (rtp_range): a port from free_port() lies in both, and another test's Asterisk bound it
    # for a stream between the check and this one's start (CI: "Transport 'transport-udp'
    # could not be started: Address already in use", and no SIP answered at all).
    start, end = rtp_range()
    ports = dataclasses.replace(site.asterisk, bind=bind, sip_port=free_listen_port(span=1),
                                http_port=free_listen_port(span=1), rtp_start=start,
                                rtp_end=end, fastagi_port=free_listen_port(span=1))
    return dataclasses.replace(site, asterisk=ports)


class PrivateAsterisk:
    def __init__(self, site: Site, var_dir: Path, *, operators: Iterable[OperatorEndpoint] = (),
                 trunk_contact: str | None = None, extra_dialplan: Iterable[Path] = (),
                 database_url: str | None = None, node: str | None = None) -> None:
        self.site, self.var_dir = site, var_dir
        self.node = node
        self.operators = list(operators)
        self.trunk_contact = trunk_contact
        self.extra_dialplan = list(extra_dialplan)
        self.database_url = database_url
        self.rendered: RenderResult = self.render()
        self.process = AsteriskProcess(var_dir, self.rendered)

    def render(self) -> RenderResult:
        return render(self.site, self.var_dir, operators=self.operators,
                      trunk_contact=self.trunk_contact, extra_dialplan=self.extra_dialplan,
                      database_url=self.database_url, node=self.node)

    @property
    def ari_url(self) -> str:
        return f"http://{self.site.asterisk.bind}:{self.site.asterisk.http_port}"

    @property
    def sip_port(self) -> int:
        return self.site.asterisk.sip_port

    def start(self) -> None:
        self.process.start()

    def stop(self) -> None:
        self.process.stop()

    def restart(self) -> None:
        self.process.stop()
        self.process = AsteriskProcess(self.var_dir, self.rendered)
        self.process.start()

    def cli(self, command: str) -> str:
        return cli(self.var_dir, command)

    def log_text(self) -> str:
        path = self.var_dir / "asterisk" / "log" / "messages"
        return path.read_text(errors="replace") if path.exists() else ""
