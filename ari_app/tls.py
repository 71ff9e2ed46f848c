"""Certificates for the web side (HTTPS) and the operators' SIP TLS transport.

The admin's certificate and key (PEM files named in the site file) are used when given.
Otherwise a self-signed pair is generated once, at first start, into ``var/secrets/`` (key 0600)
with Debian's ``openssl`` command; its SHA-256 fingerprint is printed once, so operators and
admins can check what their browser or softphone shows before trusting it.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

DAYS = 825  # the longest validity browsers accept for a certificate


class TlsError(Exception):
    pass


@dataclass(frozen=True)
class CertPair:
    cert: Path
    key: Path
    fingerprint: str      # SHA-256 of the DER certificate, AA:BB:... as browsers show it
    generated: bool       # True only on the start that made it


def fingerprint(cert: Path) -> str:
    try:
        der = ssl.PEM_cert_to_DER_cert(cert.read_text())
    except (OSError, ValueError) as exc:
        raise TlsError(f"{cert}: expected a PEM certificate ({exc})") from None
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def _san(hosts: list[str]) -> str:
    parts = []
    for h in dict.fromkeys(hosts):
        try:
            ipaddress.ip_address(h.strip("[]"))
            parts.append(f"IP:{h.strip('[]')}")
        except ValueError:
            parts.append(f"DNS:{h}")
    return ",".join(parts)


def ensure_pair(var_dir: Path, name: str, hosts: list[str], *, cert: str | None = None,
                key: str | None = None) -> CertPair:
    """The admin's pair when given (checked to load), else var/secrets/<name>.{crt,key}."""
    if cert and key:
        pair = CertPair(Path(cert), Path(key), fingerprint(Path(cert)), False)
        _check_loads(pair)
        return pair
    directory = var_dir / "secrets"
    directory.mkdir(parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    crt, pem = directory / f"{name}.crt", directory / f"{name}.key"
    if crt.exists() and pem.exists():
        return CertPair(crt, pem, fingerprint(crt), False)
    tmp_crt, tmp_key = crt.with_suffix(".crt.tmp"), pem.with_suffix(".key.tmp")
    hosts = hosts or ["127.0.0.1"]
    old_umask = os.umask(0o077)
    try:
        done = subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", str(DAYS), "-subj", f"/O=Siaga 112/CN={hosts[0]}",
             "-addext", f"subjectAltName={_san([*hosts, '127.0.0.1', 'localhost'])}",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-keyout", str(tmp_key), "-out", str(tmp_crt)],
            capture_output=True, text=True, timeout=60, check=False)
    except FileNotFoundError:
        raise TlsError("openssl is not installed (Debian package openssl): cannot make the "
                       "self-signed certificate; or name your own in the site file") from None
    finally:
        os.umask(old_umask)
    if done.returncode != 0:
        raise TlsError(f"openssl could not make a certificate: {done.stderr.strip()[-400:]}")
    os.chmod(tmp_key, 0o600)
    os.chmod(tmp_crt, 0o600)
    tmp_key.replace(pem)   # key first: a pair is complete only when the certificate is there
    tmp_crt.replace(crt)
    pair = CertPair(crt, pem, fingerprint(crt), True)
    print(f"siaga112: generated a self-signed {name} certificate for {', '.join(hosts)}\n"
          f"  {crt}\n  SHA-256 fingerprint {pair.fingerprint}\n"
          "  (shown once: check it in the browser or softphone before trusting it)",
          file=sys.stderr)
    log.info("generated self-signed %s certificate %s fingerprint %s", name, crt, pair.fingerprint)
    return pair


def _check_loads(pair: CertPair) -> None:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        ctx.load_cert_chain(str(pair.cert), str(pair.key))
    except (OSError, ssl.SSLError) as exc:
        raise TlsError(f"{pair.cert} / {pair.key}: expected a matching PEM certificate and key "
                       f"({exc})") from None


def server_context(pair: CertPair) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(str(pair.cert), str(pair.key))
    return ctx
