"""A private PostgreSQL cluster for fault tests: initdb in a temp dir, a free loopback port,
trust auth. Tests stop it (``pg_ctl stop -m fast``) and start it again; the machine's own
cluster is never touched."""

from __future__ import annotations

import logging
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

from ari_app.testing.ports import free_port

log = logging.getLogger(__name__)

PG_BIN_DIRS = [Path(f"/usr/lib/postgresql/{v}/bin") for v in (17, 16, 15, 14, 13)]


def pg_bin() -> Path | None:
    """The directory of initdb/pg_ctl/postgres, if PostgreSQL's server binaries are installed."""
    for d in PG_BIN_DIRS:
        if (d / "initdb").exists() and (d / "pg_ctl").exists():
            return d
    return None


class PrivateCluster:
    """One throw-away cluster. PostgreSQL refuses to run as root: as root, the server runs as
    the unprivileged ``postgres`` account, in a directory this object made and removes."""

    def __init__(self, bin_dir: Path | None = None, *, user: str = "postgres",
                 host: str = "127.0.0.1", wrap: list[str] | None = None) -> None:
        """``host``/``wrap``: listen on another address, with the server's commands run under
        ``wrap`` (e.g. inside a test's network namespace: ``Namespace.prefix``)."""
        found = bin_dir or pg_bin()
        if found is None:
            raise RuntimeError("PostgreSQL server binaries not found in "
                               f"{', '.join(map(str, PG_BIN_DIRS))} (apt install postgresql-15)")
        self.bin = found
        self.host = host
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="siaga112-pg-"))
        self.data = self.root / "data"
        self.log_path = self.root / "server.log"
        self.run_as: list[str] = list(wrap or [])
        if os.geteuid() == 0:
            entry = pwd.getpwnam(user)
            os.chown(self.root, entry.pw_uid, entry.pw_gid)
            self.run_as += ["runuser", "-u", user, "--"]
        self.started = False

    @property
    def url(self) -> str:
        """postgresql:// URL of the cluster's ``postgres`` database (trust auth, no password)."""
        return f"postgresql://postgres@{self.host}:{self.port}/postgres"

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.run_as, *args], check=check, capture_output=True,
                              text=True, timeout=60)

    def init(self) -> None:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres",
                  "--auth=trust", "-E", "UTF8", "--no-sync")
        conf = self.data / "postgresql.conf"
        with open(conf, "a") as fh:  # loopback only, our port, sockets in our own directory
            fh.write(f"\nlisten_addresses = '{self.host}'\nport = {self.port}\n"
                     f"unix_socket_directories = '{self.root}'\nfsync = off\n"
                     "max_connections = 50\nshared_buffers = 16MB\n")
        if self.host != "127.0.0.1":  # a test's own namespace: trust its /30 only
            with open(self.data / "pg_hba.conf", "a") as fh:
                fh.write("host all all samenet trust\n")

    def start(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.log_path),
                  "-w", "-t", "30", "start")
        self.started = True

    def stop(self, mode: str = "fast") -> None:
        """``pg_ctl stop -m fast``: sessions are ended (admin shutdown), new ones refused."""
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "30",
                  "stop")
        self.started = False

    def createdb(self, name: str) -> str:
        self._run(str(self.bin / "createdb"), "-h", self.host, "-p", str(self.port),
                  "-U", "postgres", name)
        return f"postgresql://postgres@{self.host}:{self.port}/{name}"

    def destroy(self) -> None:
        if self.started:
            try:
                self.stop("immediate")
            except subprocess.SubprocessError as exc:
                log.error("private PostgreSQL in %s did not stop: %s", self.root, exc)
        shutil.rmtree(self.root, ignore_errors=True)
