"""A network namespace joined to this one by a veth pair, for partition tests.

The test makes it and removes it itself: ``siaga112-<hex>`` with ``10.112.N.2/30`` inside and
``10.112.N.1/30`` on the host side. ``cut()`` takes the inside end down, so packets to it are
dropped without a reply (a real partition, not a refused connection); ``heal()`` brings it back.
Nothing leaves the machine: the pair's addresses route only to each other.
"""

from __future__ import annotations

import logging
import secrets
import subprocess

log = logging.getLogger(__name__)


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


class Namespace:
    def __init__(self) -> None:
        tag = secrets.token_hex(3)
        self.name = f"siaga112-{tag}"
        self.host_if, self.inner_if = f"s112h{tag}", f"s112i{tag}"
        subnet = int(tag, 16) % 250 + 1
        self.host_ip, self.inner_ip = f"10.112.{subnet}.1", f"10.112.{subnet}.2"
        self.made = False

    def create(self) -> None:
        _ip("netns", "add", self.name)
        self.made = True
        _ip("link", "add", self.host_if, "type", "veth", "peer", "name", self.inner_if)
        _ip("link", "set", self.inner_if, "netns", self.name)
        _ip("addr", "add", f"{self.host_ip}/30", "dev", self.host_if)
        _ip("link", "set", self.host_if, "up")
        self.exec_ip("addr", "add", f"{self.inner_ip}/30", "dev", self.inner_if)
        self.exec_ip("link", "set", self.inner_if, "up")
        self.exec_ip("link", "set", "lo", "up")

    def exec_ip(self, *args: str) -> None:
        _ip("-n", self.name, *args)

    @property
    def prefix(self) -> list[str]:
        """Run a command inside: ``[*ns.prefix, "cmd", ...]``."""
        return ["ip", "netns", "exec", self.name]

    def cut(self) -> None:
        self.exec_ip("link", "set", self.inner_if, "down")

    def heal(self) -> None:
        self.exec_ip("link", "set", self.inner_if, "up")

    def destroy(self) -> None:
        if not self.made:
            return
        try:  # the host end goes with the namespace's end; delete it first in case it lingers
            _ip("link", "del", self.host_if)
        except subprocess.CalledProcessError:
            pass
        try:
            _ip("netns", "del", self.name)
        except subprocess.CalledProcessError as exc:
            log.error("network namespace %s not removed: %s", self.name, exc.stderr)
        self.made = False
