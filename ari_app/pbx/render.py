"""Render config/asterisk/ templates plus dialplan/ into <var>/asterisk/etc/.

Templates use ``{{name}}`` placeholders (Asterisk's own ``${VAR}`` syntax stays untouched).
An unknown placeholder is an error, never an empty string in a live config.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shlex
import shutil
import sys
import sysconfig
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from ari_app.config import PROJECT_ROOT, Site
from ari_app.pbx.agi_query import FALLBACK_FREE_MAX, fallback_dial
from ari_app.pbx.cel import prepare_cel_store
from ari_app.pbx.installation import Installation, InstallationError, installation
from ari_app.secrets import secret

log = logging.getLogger(__name__)

TEMPLATE_DIR = PROJECT_ROOT / "config" / "asterisk"
DIALPLAN_DIR = PROJECT_ROOT / "dialplan"
AGI_DIR = PROJECT_ROOT / "agi_scripts"
ARI_USER = "siaga112"
_PLACEHOLDER = re.compile(r"\{\{\s*([a-z_]+)\s*\}\}")


@dataclass(frozen=True)
class OperatorEndpoint:
    """An operator's PJSIP endpoint, ready for Linphone/Zoiper/MicroSIP."""

    name: str
    md5_cred: str                      # digest HA1 of name:asterisk:password
    display_name: str = ""
    contact: str | None = None  # static contact (test UAS, desk phone); softphones register


@dataclass(frozen=True)
class RenderResult:
    etc_dir: Path
    asterisk_conf: Path
    ari_user: str
    ari_password: str
    http_port: int
    sip_port: int
    bind: str
    asterisk: Installation | None = None  # the Asterisk this was rendered for


class RenderError(Exception):
    pass


@dataclass(frozen=True)
class VersionModules:
    """What modules.conf gets on one Asterisk major version beyond the common list."""

    add: tuple[str, ...] = ()             # loaded on this version, just before res_ari.so
    add_if_present: tuple[str, ...] = ()  # loaded if the build has it (minor-version dependent)
    drop: frozenset[str] = frozenset()    # in the common list, but this version has none


#: The one place where module lists differ by version. config/asterisk/modules.conf holds what
#: every supported version has; ``{{version_modules}}`` there (before res_ari.so) gets ``add``.
#: A module added to modules.conf that a version lacks is a render error naming it: put it in
#: that version's ``drop`` (or in the others' ``add``). chan_sip, app_macro and res_monitor are
#: gone since 21 and none of them is in the common list.
VERSION_MODULES: dict[int, VersionModules] = {
    16: VersionModules(),
    # 20.x gained res_websocket_client in a minor release; load it where the build has it.
    # Newer builds share one custom CDR/CEL engine (res_cdrel_custom): cel_sqlite3_custom, our
    # CEL store (pbx/cel.py), fails to load without it ("undefined symbol: cdrel_logger").
    20: VersionModules(add_if_present=("res_websocket_client.so", "res_cdrel_custom.so")),
    # 22's res_ari uses res_websocket_client (outbound websockets) and fails to load without it.
    22: VersionModules(add=("res_websocket_client.so",), add_if_present=("res_cdrel_custom.so",)),
}


def version_modules(ast: Installation) -> list[str]:
    """The version's extra ``load =>`` lines' modules, checked against its module dir."""
    spec = VERSION_MODULES.get(ast.major)
    if spec is None:
        raise RenderError(f"Asterisk {ast.version}: no module list for major version {ast.major} "
                          f"(known: {', '.join(map(str, sorted(VERSION_MODULES)))})")
    present = [m for m in spec.add_if_present if Path(ast.module_dir, m).exists()]
    return [*spec.add, *present]


def check_modules(modules_conf: str, ast: Installation) -> str:
    """Drop the version's absent modules; every remaining ``load =>`` must exist on disk."""
    spec = VERSION_MODULES[ast.major]
    kept, missing = [], []
    for line in modules_conf.splitlines():
        m = re.match(r"\s*(?:load|require)\s*=>\s*(\S+)", line)
        if m and m.group(1) in spec.drop:
            continue
        if m and not Path(ast.module_dir, m.group(1)).exists():
            missing.append(m.group(1))
        kept.append(line)
    if missing:
        raise RenderError(
            f"config/asterisk/modules.conf: {', '.join(missing)} not in {ast.module_dir} "
            f"(Asterisk {ast.version}); list it per version in render.VERSION_MODULES")
    return "\n".join(kept) + "\n"


def fill(template: str, values: Mapping[str, str], name: str) -> str:
    def sub(m: re.Match[str]) -> str:
        key = m.group(1)
        if key not in values:
            raise RenderError(f"{name}: unknown placeholder {{{{{key}}}}}")
        return values[key]

    return _PLACEHOLDER.sub(sub, template)


# SIP over TLS and SRTP keyed by SDES (RFC 4568) inside that TLS: media_encryption_optimistic
# is off, so a phone that offers plain RTP is refused instead of silently talking in clear.
OPERATOR_TLS_LINES = ("transport = transport-tls\nmedia_encryption = sdes\n"
                      "media_encryption_optimistic = no\n")


def operator_section(op: OperatorEndpoint, tls: bool = False) -> str:
    contact = f"contact = {op.contact}\n" if op.contact else ""
    # A registering softphone may sit behind NAT: follow where its packets come from. A static
    # contact is a fixed address (a desk phone, or the SIP edge in front of several nodes): the
    # dialog follows the Contact the far end gives, or in-dialog requests would go to the edge
    # with no route to the phone.
    rewrite = "no" if op.contact else "yes"
    callerid = f'callerid = "{op.display_name}" <{op.name}>\n' if op.display_name else ""
    return (
        f"[{op.name}]\ntype = endpoint\ncontext = from-operators\ndisallow = all\n"
        "allow = ulaw,alaw\ndirect_media = no\nrtp_symmetric = yes\nforce_rport = yes\n"
        f"rewrite_contact = {rewrite}\ndtmf_mode = rfc4733\nauth = {op.name}\naors = {op.name}\n"
        "send_connected_line = no\ntimers = no\n"
        f"{OPERATOR_TLS_LINES if tls else ''}"
        f"{callerid}\n"
        f"[{op.name}]\ntype = auth\nauth_type = md5\nrealm = asterisk\nusername = {op.name}\n"
        f"md5_cred = {op.md5_cred}\n\n"
        f"[{op.name}]\ntype = aor\nmax_contacts = 1\nremove_existing = yes\n{contact}\n"
    )


# The operator-dependent parts of the config, in files of their own that pjsip.conf and
# extensions.conf include: `siaga112 operators ...` rewrites only these and reloads PJSIP and
# the dialplan, so an admin change never touches the rest of the running config.
OPERATORS_PJSIP = "pjsip_operators.conf"
OPERATORS_DIAL = "fallback_operators.conf"


def operator_files(ops: Iterable[OperatorEndpoint], tls: bool = False) -> dict[str, str]:
    """File name -> text of the operator endpoints and the fallback's every-operator list."""
    ops = list(ops)
    head = "; Rendered from the operators table (siaga112 operators ...). Do not edit.\n"
    return {
        OPERATORS_PJSIP: head + "\n".join(operator_section(op, tls) for op in ops),
        # Inside [globals] of extensions.conf: the list the fallback rings when the database
        # cannot say who is on shift.
        OPERATORS_DIAL: head + f"SIAGA_FALLBACK_DIAL = {fallback_dial([op.name for op in ops])}\n",
    }


def write_operator_files(etc: Path, ops: Iterable[OperatorEndpoint], tls: bool = False) -> list[Path]:
    """Write the operator files atomically (Asterisk may reload at any moment); 0600: digests."""
    written = []
    for name, text in operator_files(ops, tls).items():
        path = etc / name
        tmp = path.with_name(f".{name}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
        written.append(path)
    return written

def tls_transport(site: Site, var_dir: Path) -> str:
    """PJSIP's TLS transport for operator phones, with the admin's or a self-signed pair.
    ``method = tlsv1_2``: Asterisk 16's default is TLS 1.0, which OpenSSL 3 clients refuse;
    the same options work on Asterisk 22."""
    from ari_app.tls import ensure_pair

    a = site.asterisk
    pair = ensure_pair(var_dir, "sip-tls", [a.bind], cert=a.tls_cert, key=a.tls_key)
    return (f"[transport-tls]\ntype = transport\nprotocol = tls\nbind = {a.bind}:{a.tls_port}\n"
            f"cert_file = {pair.cert}\npriv_key_file = {pair.key}\n"
            "method = tlsv1_2\nverify_client = no\nverify_server = no\n")


def operator_outbound_numbers(site: Site) -> list[str]:
    """What an operator's phone may dial out: the site's other services (110, 113, ...), its
    out-of-hours forward number and its agencies' phones. Nothing else leaves through the trunk."""
    from ari_app.web.agencies import load_agencies

    numbers = set(site.other_services.values())
    if site.out_of_hours.forward_number:
        numbers.add(site.out_of_hours.forward_number)
    numbers.update(a.phone for a in load_agencies(site.code) if re.fullmatch(r"\+?[0-9]{2,20}", a.phone))
    return sorted(numbers)


def write_agi(site: Site, var_dir: Path, database_url: str | None) -> None:
    """AGI wrappers (venv Python + our script) and the small config file they read."""
    from ari_app.tickets.db import database_url as default_url

    sc = site.screening
    config = {
        "database_url": database_url or default_url(var_dir),
        "site": site.code,
        "threshold": sc.threshold,
        "window_h": sc.window_h,
        "priority_penalty": sc.priority_penalty,
        "uncategorised_priority": site.menu.uncategorised_priority,
        "budget_ms": sc.budget_ms,
        "allowlist": list(sc.allowlist),
        "fallback_journal": str(var_dir / "fallback" / "calls.jsonl"),
    }
    agi = var_dir / "agi"
    agi.mkdir(parents=True, exist_ok=True)
    conf = agi / "config.json"
    conf.write_text(json.dumps(config, indent=1))
    os.chmod(conf, 0o600)  # may hold a database password
    (var_dir / "fallback").mkdir(parents=True, exist_ok=True)
    for script in ("screen_caller", "fallback_log"):
        wrapper = var_dir / "asterisk" / "agi-bin" / script
        command, env = agi_command(script, conf)
        assignments = " ".join(f"{name}={shlex.quote(value)}" for name, value in env.items())
        wrapper.write_text(f"#!/bin/sh\n{assignments} exec {shlex.join(command)} \"$@\"\n")
        os.chmod(wrapper, 0o755)


# maxcalls counts every channel running dialplan: callers in the 112 flow, callers being shed
# (they run the overload branch for a few seconds), operators dialling out. The dialplan's own
# limit stays this far below it, so a shed caller still gets a record and the prompt before
# Asterisk's hard refusal (which leaves no record) would take over.
SHED_HEADROOM = 0.1


def line_limits(env: Mapping[str, str] | None = None) -> tuple[int, int]:
    """(maxcalls, max_callers): Asterisk's hard limit and the 112 context's own, below it.

    ``SIAGA112_MAXCALLS`` (400) and ``SIAGA112_MAX_CALLERS`` (default 90 % of maxcalls; every
    call when maxcalls is 0, Asterisk's "no limit"). A max_callers not below maxcalls would never
    be reached: Asterisk refuses first, with no record, so it is a render error.
    """
    env = os.environ if env is None else env
    try:
        maxcalls = int(env.get("SIAGA112_MAXCALLS", "400"))
        default = maxcalls - max(1, round(maxcalls * SHED_HEADROOM)) if maxcalls > 0 else 100000
        max_callers = int(env.get("SIAGA112_MAX_CALLERS", str(default)))
    except ValueError as exc:
        raise RenderError(f"SIAGA112_MAXCALLS / SIAGA112_MAX_CALLERS: not a whole number ({exc})") \
            from None
    if max_callers < 1 or maxcalls < 0:
        raise RenderError(f"SIAGA112_MAX_CALLERS={max_callers} must be at least 1 "
                          f"(SIAGA112_MAXCALLS={maxcalls} at least 0)")
    if maxcalls and max_callers >= maxcalls:
        raise RenderError(
            f"SIAGA112_MAX_CALLERS={max_callers} must be below SIAGA112_MAXCALLS={maxcalls}: "
            "past maxcalls Asterisk refuses a caller before the dialplan can record them")
    return maxcalls, max_callers


def recordings_dir(var_dir: Path, site_code: str) -> Path:
    """Where the dialplan's MixMonitor writes every 112 call (ARI's stored recordings dir)."""
    return var_dir.resolve() / "asterisk" / "spool" / "recording" / "siaga112" / site_code


def agi_command(script: str, conf: Path) -> tuple[list[str], dict[str, str]]:
    """How Asterisk starts an AGI script: one Python process per call, so start-up is its cost.

    ``-S`` skips the site module (the venv's .pth and editable-install hooks cost more than the
    script itself); the project and the venv's packages are put on the path directly instead.
    """
    path = os.pathsep.join([str(PROJECT_ROOT), sysconfig.get_paths()["purelib"]])
    return ([sys.executable, "-S", str(AGI_DIR / f"{script}.py"), str(conf)],
            {"PYTHONPATH": path})


def node_name() -> str:
    """This machine's node name on a site of several nodes (``SIAGA112_NODE``), or ""."""
    name = os.environ.get("SIAGA112_NODE", "").strip()
    if name and not re.fullmatch(r"[a-z][a-z0-9_-]{0,30}", name):
        raise RenderError(f"SIAGA112_NODE: expected a node name like 'a' or 'node-2', got {name!r}")
    return name


def systemname_line(node: str) -> str:
    # Asterisk prefixes every channel's uniqueid with its systemname: two nodes started in the
    # same second would otherwise hand out the same ids, and a shared database keys calls by them.
    return f"systemname = {node}" if node else ""


def render(
    site: Site,
    var_dir: Path,
    *,
    operators: Iterable[OperatorEndpoint] = (),
    trunk_contact: str | None = None,
    extra_dialplan: Iterable[Path] = (),
    dialplan_dir: Path = DIALPLAN_DIR,
    database_url: str | None = None,
    asterisk: Installation | None = None,
    node: str | None = None,
) -> RenderResult:
    """Write a complete, self-contained Asterisk configuration under ``var_dir/asterisk``.

    For the Asterisk given, or else the one the environment chooses (its version read from the
    binary): module dir, data dir and module list follow it.
    """
    try:
        ast = asterisk or installation()
    except InstallationError as exc:
        raise RenderError(str(exc)) from exc
    extra_modules = version_modules(ast)
    maxcalls, max_callers = line_limits()
    var_dir = var_dir.resolve()
    ast_dir = var_dir / "asterisk"
    etc = ast_dir / "etc"
    if etc.exists():
        shutil.rmtree(etc)
    for sub in ("etc/dialplan", "lib", "spool", "run", "log", "spool/recording", "agi-bin"):
        (ast_dir / sub).mkdir(parents=True, exist_ok=True)
    write_agi(site, var_dir, database_url)
    prepare_cel_store(var_dir)  # Asterisk's own call record, read by reconcile (pbx/cel.py)
    sounds = var_dir / "sounds"
    (sounds / "moh").mkdir(parents=True, exist_ok=True)

    ops = list(operators)
    password = secret(var_dir, "ari.password")
    a = site.asterisk
    trunk_contact = trunk_contact or os.environ.get("SIAGA112_TRUNK_CONTACT") or ""
    dialplan_files = sorted(dialplan_dir.glob("*.conf")) + list(extra_dialplan)
    includes = []
    for src in dialplan_files:
        shutil.copyfile(src, etc / "dialplan" / src.name)
        includes.append(f'#include "dialplan/{src.name}"')
    numbers = "\n".join(
        f"exten => {n},1,Set(__SIAGA_DIALLED={n})\n same => n,Goto(siaga112-emergency,s,1)"
        for n in site.numbers
    )
    tls = a.operators_use_tls
    # never empty: an included context with no extensions does not exist for Asterisk
    outbound = "\n".join([f"exten => {n},1,Goto(siaga112-operator-dial,{n},1)"
                          for n in operator_outbound_numbers(site)]
                         or ["exten => siaga112-none,1,Hangup()"])
    values = {
        "operator_outbound_extensions": outbound,
        "etc_dir": str(etc),
        "module_dir": ast.module_dir,
        "var_dir": str(ast_dir),
        "data_dir": ast.data_dir,
        "sbin_dir": ast.sbin_dir,
        "asterisk_version": ast.version,
        "version_modules": "\n".join(f"load => {m}" for m in extra_modules),
        "agi_dir": str(ast_dir / "agi-bin"),
        "maxload": os.environ.get("SIAGA112_MAXLOAD", "0"),
        "maxcalls": str(maxcalls),
        "max_callers": str(max_callers),
        "systemname_line": systemname_line(node if node is not None else node_name()),
        "bind": a.bind,
        "http_port": str(a.http_port),
        "sip_port": str(a.sip_port),
        "rtp_start": str(a.rtp_start),
        "rtp_end": str(a.rtp_end),
        "ari_user": ARI_USER,
        "ari_password": password,
        "sounds_dir": str(sounds),
        "trunk_contact_line": f"contact = {trunk_contact}" if trunk_contact else "",
        "trunk_match": site.asterisk.trunk_host or "127.0.0.1",
        "operators_pjsip": OPERATORS_PJSIP,
        "tls_transport": tls_transport(site, var_dir) if tls else "",
        "stasis_app": site.stasis_app,
        "site_code": site.code,
        "operators_dial": OPERATORS_DIAL,
        "fallback_ring_s": str(int(site.queue.ring_timeout_s)),
        "fallback_free_max": str(FALLBACK_FREE_MAX),
        "app_var_dir": str(var_dir),
        "recordings_dir": str(recordings_dir(var_dir, site.code)),
        "python": sys.executable,
        "fastagi_url": f"agi://127.0.0.1:{a.fastagi_port}",
        "number_extensions": numbers,
        "dialplan_includes": "\n".join(includes),
    }
    for tpl in sorted(TEMPLATE_DIR.glob("*.conf")):
        text = fill(tpl.read_text(), values, str(tpl.relative_to(PROJECT_ROOT)))
        if tpl.name == "modules.conf":
            text = check_modules(text, ast)
        out = etc / tpl.name
        out.write_text(text)
        if tpl.name in ("ari.conf", "pjsip.conf"):
            os.chmod(out, 0o600)  # they hold secrets
    write_operator_files(etc, ops, tls)
    log.info("rendered Asterisk config for site=%s, %s, into %s", site.code, ast.describe(), etc)
    return RenderResult(etc, etc / "asterisk.conf", ARI_USER, password, a.http_port, a.sip_port,
                        a.bind, ast)
