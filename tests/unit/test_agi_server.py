"""The FastAGI screening server, spoken to as Asterisk speaks to it (no Asterisk needed here;
the call through a real Asterisk is in tests/integration/test_screening_fallback.py)."""

from __future__ import annotations

import dataclasses
import socket
import sqlite3
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ari_app.config import Site, load_site
from ari_app.pbx.agi_query import sqlite_time
from ari_app.pbx.render import write_agi
from ari_app.testing.agi_server import start_agi_server, stop_agi_server
from ari_app.testing.ports import free_port
from ari_app.tickets.fallback import read_records
from ari_app.tickets.migrate import upgrade

FLAGGED = "081277770000"


def env(script: str, caller: str = FLAGGED) -> bytes:
    lines = {"agi_network": "yes", "agi_network_script": script, "agi_request":
             f"agi://127.0.0.1/{script}", "agi_channel": "PJSIP/carrier-00000001",
             "agi_uniqueid": "1716080000.7", "agi_callerid": caller, "agi_dnid": "112"}
    return "".join(f"{k}: {v}\n" for k, v in lines.items()).encode() + b"\n"


def converse(port: int, hello: bytes, timeout: float = 10.0) -> list[str]:
    """Play Asterisk: send the environment, answer every command "200 result=1", until EOF."""
    commands: list[str] = []
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(hello)
        reader = sock.makefile("rb")
        for raw in reader:
            commands.append(raw.decode().strip())
            sock.sendall(b"200 result=1\n")
    return commands


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Site, subprocess.Popen[bytes]]]:
    jepara = load_site("jepara")
    site = dataclasses.replace(jepara, asterisk=dataclasses.replace(
        jepara.asterisk, fastagi_port=free_port()))
    db = tmp_path / "siaga112.db"
    url = f"sqlite+aiosqlite:///{db}"
    upgrade(url)
    with sqlite3.connect(db) as conn:
        for n in range(3):
            conn.execute("INSERT INTO tickets (reference, site, channel_id, caller_number, "
                         "caller_key, arrived_at, status, outcome) VALUES (?, 'jepara', ?, ?, "
                         "'+6281277770000', ?, 'abandoned', 'ghost')",
                         (f"G-{n}", f"old-{n}", FLAGGED, sqlite_time(datetime.now(UTC))))
    (tmp_path / "asterisk" / "agi-bin").mkdir(parents=True)
    write_agi(site, tmp_path, url)
    proc = start_agi_server(site, tmp_path, tmp_path / "agi-server.log")
    yield site, proc
    stop_agi_server(proc)


def test_a_call_is_screened_in_a_forked_process_over_the_socket(
    server: tuple[Site, subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    site, _ = server
    port = site.asterisk.fastagi_port
    commands = converse(port, env("screen_caller"))
    assert 'SET VARIABLE "SIAGA_FLAGS" "flagged:3"' in commands
    penalised = site.menu.uncategorised_priority + site.screening.priority_penalty
    assert f'SET VARIABLE "SIAGA_PRIORITY" "{min(9, penalised)}"' in commands
    assert converse(port, env("screen_caller", "081200000001")) == [
        'SET VARIABLE "SIAGA_FLAGS" "clean"']
    log = (tmp_path / "agi-server.log").read_text()
    assert "call=1716080000.7 screen_caller done" in log


def test_a_script_it_does_not_serve_is_refused_and_the_call_goes_on(
    server: tuple[Site, subprocess.Popen[bytes]],
) -> None:
    site, _ = server
    [command] = converse(site.asterisk.fastagi_port, env("not_ours"))
    assert command.startswith("VERBOSE") and "not_ours" in command


def test_a_caller_refused_by_the_full_line_is_recorded_over_the_socket(
    server: tuple[Site, subprocess.Popen[bytes]], tmp_path: Path,
) -> None:
    """fallback_log's overload record (dialplan siaga112-overload), its arguments in the AGI
    environment: written at once, no AGI command asked of Asterisk."""
    site, _ = server
    hello = env("fallback_log", "081299990003")[:-1] + \
        b"agi_arg_1: overload\nagi_arg_2: 112\nagi_arg_3: 40\n\n"
    assert converse(site.asterisk.fastagi_port, hello) == []
    [record] = read_records(tmp_path / "fallback" / "calls.jsonl")  # the day's file
    assert {k: record[k] for k in ("event", "uniqueid", "caller", "dialled", "limit")} == {
        "event": "overload", "uniqueid": "1716080000.7", "caller": "081299990003",
        "dialled": "112", "limit": "40"}
    assert "call=1716080000.7 fallback_log done" in (tmp_path / "agi-server.log").read_text()


def test_a_stuck_conversation_is_cut_off_so_the_call_goes_on(
    server: tuple[Site, subprocess.Popen[bytes]],
) -> None:
    """A peer that never finishes its environment: the child's alarm ends it, not the call."""
    site, proc = server
    with socket.create_connection(("127.0.0.1", site.asterisk.fastagi_port), timeout=10) as sock:
        sock.sendall(b"agi_network: yes\n")  # ... and nothing more
        assert sock.recv(100) == b""  # closed by the server (its alarm), not by our time-out
    assert proc.poll() is None  # the server itself goes on serving
    assert converse(site.asterisk.fastagi_port, env("screen_caller"))[0].startswith(
        'SET VARIABLE "SIAGA_FLAGS"')
