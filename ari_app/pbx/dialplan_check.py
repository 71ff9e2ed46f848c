"""``dialplan check`` and ``dialplan reload``: let a real Asterisk judge the admin's dialplan/ first.

``check`` renders the full configuration with the admin's dialplan directory into a throw-away
var dir on free loopback ports, boots a throw-away Asterisk on it, runs ``dialplan reload`` there
and reads what Asterisk's config parser (config.c), pbx_config and the PBX core logged to
``<var>/asterisk/log/messages``. Every problem is reported as ``file:line: message`` against the
admin's own file (the rendered copy ``etc/dialplan/NAME`` maps back to ``dialplan_dir/NAME``).
On top of what Asterisk logs, it checks that every application used by the admin's dialplan is
loaded (``dialplan show`` against ``core show applications``) and that the contexts our rendered
config sends calls to exist.

``reload`` runs ``check`` and only when it passed copies the files into the live rendered config
and runs ``dialplan reload`` on the live Asterisk. When the check fails the live Asterisk is not
touched and keeps its old dialplan.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from ari_app.config import Site
from ari_app.pbx.process import AsteriskError, AsteriskProcess, cli, pid_path
from ari_app.pbx.render import TEMPLATE_DIR, RenderError, render
from ari_app.testing.asterisk import on_free_ports

log = logging.getLogger(__name__)

Severity = Literal["error", "warning"]

#: The whole check (render, boot, queries, stop) stays under this many seconds.
CHECK_BUDGET_S = 18.0
_START_TIMEOUT_S = 7.0
_STOP_STEP_S = 2.0  # clean stop, then SIGTERM wait, then SIGKILL wait: at most 3 steps

#: Contexts the rendered config (not the admin's files) sends calls to.
REQUIRED_CONTEXTS: dict[str, str] = {
    "from-carrier": "the carrier trunk's endpoint context in pjsip.conf",
    "from-operators": "the operators' endpoint context in pjsip.conf",
    "siaga112-emergency": "the site's numbers in [siaga112-numbers] (Goto(siaga112-emergency,s,1))",
}

#: Asterisk messages about the dialplan that are reported but do not block a reload.
#: Everything else Asterisk logs about the dialplan files (any ERROR, any other WARNING) blocks.
WARNING_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"for an extension is strongly discouraged"),   # exten => _.,...
    re.compile(r"already included in '.*' context"),           # the same include => twice
    re.compile(r"Same File included more than once"),          # the same #include twice
)

_LOG_LINE = re.compile(
    r"^\[[^\]]*\]\s+(?P<level>WARNING|ERROR)\[\d+\](?:\[[^\]]*\])?\s+(?P<source>[\w./-]+):\s?(?P<msg>.*)$")
_DIALPLAN_SOURCES = ("config.c", "pbx_config.c", "pbx.c")
# "... at line 23 of /x/etc/dialplan/20-emergency.conf!", "No '=' (equal sign) in line 4 of /x/y.conf"
_AT_LINE = re.compile(r",?\s*(?:(?:at|in|for|on)\s+)?line (?P<line>\d+) of (?P<path>/\S+?)!?\s*$")
_SAME_FILE = re.compile(r"^'(?P<path>[^']+)', line (?P<line>\d+):\s*(?P<rest>.*)$")
_UNTERMINATED = re.compile(r"Unterminated comment detected beginning on line (?P<line>\d+)")
_MISSING_INCLUDE = re.compile(r"The file '(?P<name>.+)' was listed as a #include but it does not exist")
_EXEC_DISABLED = re.compile(r"Cannot perform #exec unless execincludes")
_NONEXISTENT_INCLUDE = re.compile(
    r"Context '(?P<context>.+)' tries to include nonexistent context '(?P<included>.+)'")
_DUPLICATE_EXTEN = re.compile(r"Unable to register extension '.*' priority .* in '.*', already in use")

# `dialplan show`: "  '6' =>   1. NoSuchApp(x)   [20-emergency.conf:29]", "[ring]  4. Dial(...) [f:9]"
_SHOW_PRIORITY = re.compile(
    r"\s(?P<prio>\d+)\.\s+(?P<app>[^\s(]+)\(.*\)\s*\[(?P<file>[^\[\]:]+):(?P<line>\d+)\]\s*$")
_SHOW_CONTEXT = re.compile(r"^\[ Context '(?P<name>[^']+)' created by")
# `core show applications`: "            Answer: Answer a channel if ringing."
_APPLICATION = re.compile(r"^\s*(?P<name>[A-Za-z0-9_]+):\s")


@dataclass(frozen=True)
class Problem:
    file: Path
    line: int | None
    message: str
    severity: Severity = "error"

    def format(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else str(self.file)
        prefix = "warning: " if self.severity == "warning" else ""
        return f"{where}: {prefix}{self.message}"


@dataclass
class CheckResult:
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "warning"]

    def format(self) -> str:
        """One ``file:line: message`` per problem (warnings say ``warning:``), errors first."""
        return "\n".join(p.format() for p in self.problems)


# ------------------------------------------------------------------------------------------
# check


def check(site: Site, dialplan_dir: Path, work_dir: Path | None = None) -> CheckResult:
    """Load ``dialplan_dir`` into a throw-away Asterisk and report every problem it finds.

    ``work_dir``: render the throw-away config there (kept afterwards, for inspection); by
    default a temporary directory that is removed. Never the live var dir.
    """
    started = time.monotonic()
    deadline = started + CHECK_BUDGET_S
    dialplan_dir = dialplan_dir.resolve()
    if not dialplan_dir.is_dir():
        return CheckResult([Problem(dialplan_dir, None, "dialplan directory does not exist")])
    if not sorted(dialplan_dir.glob("*.conf")):
        return CheckResult([Problem(dialplan_dir, None, "no *.conf dialplan files")])

    if work_dir is None:
        var = Path(tempfile.mkdtemp(prefix="siaga112-dialplan-check-"))
        keep = False
    else:
        var = work_dir.resolve()
        if pid_path(var).exists():
            raise ValueError(f"{var} holds a running Asterisk; check() needs a throw-away work_dir")
        var.mkdir(parents=True, exist_ok=True)
        keep = True
    try:
        result = _check_in(site, dialplan_dir, var, deadline)
    finally:
        if not keep:
            shutil.rmtree(var, ignore_errors=True)
    log.info("dialplan check of %s: %d error(s), %d warning(s) in %.1fs", dialplan_dir,
             len(result.errors), len(result.warnings), time.monotonic() - started)
    return result


class _ThrowAwayAsterisk(AsteriskProcess):
    """An AsteriskProcess whose stop is bounded: a few seconds, then SIGKILL."""

    def stop(self, timeout: float = _STOP_STEP_S) -> None:
        proc = self.proc
        if proc is None:
            return
        try:
            cli(self.var_dir, "core stop now", timeout=timeout)
        except (AsteriskError, subprocess.TimeoutExpired, OSError):
            proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                log.warning("throw-away asterisk pid=%d did not die", proc.pid)
        pid_path(self.var_dir).unlink(missing_ok=True)
        self.proc = None


def _check_in(site: Site, dialplan_dir: Path, var: Path, deadline: float) -> CheckResult:
    try:
        rendered = render(on_free_ports(site), var, dialplan_dir=dialplan_dir)
    except (RenderError, OSError) as exc:
        return CheckResult([Problem(dialplan_dir, None, f"cannot render the config: {exc}")])
    etc = rendered.etc_dir
    problems: list[Problem] = []
    show = apps = ""
    proc = _ThrowAwayAsterisk(var, rendered)
    try:
        try:
            proc.start(timeout=max(1.0, min(_START_TIMEOUT_S, _left(deadline))))
        except AsteriskError as exc:
            problems.append(Problem(dialplan_dir, None, f"throw-away Asterisk did not start: {exc}"))
        else:
            reloaded = _query(var, "dialplan reload", deadline)
            if "Dialplan reloaded" not in reloaded:
                problems.append(Problem(dialplan_dir, None,
                                        "pbx_config did not load the dialplan (`dialplan reload`: "
                                        f"{reloaded.strip() or 'no answer'})"))
            show = _query(var, "dialplan show", deadline)
            apps = _query(var, "core show applications", deadline)
    finally:
        proc.stop()
    messages = var / "asterisk" / "log" / "messages"
    text = messages.read_text(errors="replace") if messages.exists() else ""
    problems += problems_from_log(text, etc, dialplan_dir)
    if show and apps:
        problems += unknown_applications(show, apps, dialplan_dir)
        problems += missing_contexts(show, dialplan_dir)
    return CheckResult(_dedupe(problems))


def _left(deadline: float) -> float:
    """Seconds left for starting and querying, keeping enough for the bounded stop (3 steps)."""
    return deadline - time.monotonic() - 3 * _STOP_STEP_S


def _query(var: Path, command: str, deadline: float) -> str:
    left = _left(deadline)
    if left < 0.5:
        log.warning("throw-away asterisk: no time left for %r", command)
        return ""
    try:
        return cli(var, command, timeout=min(5.0, left))
    except (AsteriskError, subprocess.TimeoutExpired, OSError) as exc:
        log.info("throw-away asterisk: %r failed: %s", command, exc)
        return ""


def _dedupe(problems: list[Problem]) -> list[Problem]:
    """Startup and our `dialplan reload` log the same messages twice: keep one, errors first."""
    seen: set[tuple[Path, int | None, str]] = set()
    out: list[Problem] = []
    for p in problems:
        key = (p.file, p.line, p.message)
        if key not in seen:
            seen.add(key)
            out.append(p)
    return sorted(out, key=lambda p: (p.severity != "error", str(p.file), p.line or 0))


# ------------------------------------------------------------------------------------------
# Asterisk's log -> problems


def severity_of(level: str, message: str) -> Severity:
    """ERROR always blocks; a WARNING about the dialplan blocks unless it is known harmless."""
    if level == "ERROR":
        return "error"
    return "warning" if any(p.search(message) for p in WARNING_PATTERNS) else "error"


def problems_from_log(text: str, etc_dir: Path, dialplan_dir: Path) -> list[Problem]:
    """Problems in the admin's dialplan files from a throw-away Asterisk's ``messages`` log."""
    problems: list[Problem] = []
    detail: str | None = None  # pbx.c says what is duplicated, pbx_config says where
    for raw in text.splitlines():
        m = _LOG_LINE.match(raw)
        if m is None or m.group("source") not in _DIALPLAN_SOURCES:
            continue
        level, msg = m.group("level"), m.group("msg").strip()
        if _DUPLICATE_EXTEN.search(msg):
            detail = msg
            continue
        problem = _locate(level, msg, etc_dir, dialplan_dir)
        if problem is not None and detail and msg.startswith("Unable to register extension at line"):
            problem = Problem(problem.file, problem.line, detail, problem.severity)
        detail = None
        if problem is not None:
            problems.append(problem)
    return problems


def _locate(level: str, msg: str, etc_dir: Path, dialplan_dir: Path) -> Problem | None:
    m = _AT_LINE.search(msg)
    if m is not None:
        text = msg[:m.start()].rstrip(" ,")
        return _mapped(Path(m.group("path")), int(m.group("line")), text, level, etc_dir, dialplan_dir)
    m = _SAME_FILE.match(msg)
    if m is not None:
        path = Path(m.group("path"))
        if not path.is_absolute():
            path = etc_dir / path
        return _mapped(path, int(m.group("line")), m.group("rest"), level, etc_dir, dialplan_dir)
    sev = severity_of(level, msg)
    m = _UNTERMINATED.search(msg)
    if m is not None:
        opened = int(m.group("line"))
        files = [f for f in _admin_files(dialplan_dir) if opened in _unterminated_comments(f)]
        where = files[0] if files else dialplan_dir
        return Problem(where, opened, "unterminated block comment (';--' without '--;'): "
                       "everything after it is ignored", sev)
    m = _MISSING_INCLUDE.search(msg)
    if m is not None:
        name = m.group("name")
        file, at = _find_line(dialplan_dir, re.compile(r"^\s*#\s*include\s+[\"<]?" + re.escape(name)))
        return Problem(file, at, f"#include of missing file '{name}' (paths are relative to the "
                       "rendered etc/, e.g. \"dialplan/NAME.conf\"); Asterisk ignores the rest of this file",
                       sev)
    if _EXEC_DISABLED.search(msg):
        file, at = _find_line(dialplan_dir, re.compile(r"^\s*#\s*exec\b"))
        return Problem(file, at, "#exec is disabled (execincludes is off); the line is ignored", sev)
    m = _NONEXISTENT_INCLUDE.search(msg)
    if m is not None:
        context, included = m.group("context"), m.group("included")
        file, at = _find_include(dialplan_dir, context, included)
        return Problem(file, at, f"context '{context}' includes '{included}', which does not exist", sev)
    return None  # not about the dialplan (or not located): another module's noise


def _mapped(path: Path, line: int, text: str, level: str, etc_dir: Path,
            dialplan_dir: Path) -> Problem | None:
    """Map a rendered file back to the admin's file; None when it is not a dialplan file."""
    sev = severity_of(level, text)
    try:
        rel = path.resolve().relative_to(etc_dir.resolve())
    except ValueError:
        return Problem(path, line, text, sev)  # outside the rendered etc (an absolute #include)
    if rel.parts[:1] == ("dialplan",) and len(rel.parts) == 2:
        return Problem(dialplan_dir / rel.name, line, text, sev)
    if rel == Path("extensions.conf"):
        return Problem(TEMPLATE_DIR / "extensions.conf", None,
                       f"{text} (line {line} of the rendered extensions.conf)", sev)
    return None  # pjsip.conf, ari.conf, ...: rendered from our templates, not the dialplan


def _admin_files(dialplan_dir: Path) -> list[Path]:
    return sorted(dialplan_dir.glob("*.conf"))


def _lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()
    except OSError:
        return []


def _find_line(dialplan_dir: Path, pattern: re.Pattern[str]) -> tuple[Path, int | None]:
    for f in _admin_files(dialplan_dir):
        for n, text in enumerate(_lines(f), 1):
            if pattern.search(text):
                return f, n
    return dialplan_dir, None


def _find_include(dialplan_dir: Path, context: str, included: str) -> tuple[Path, int | None]:
    section = re.compile(r"^\s*\[([^\]]+)\]")
    include = re.compile(r"^\s*include\s*=>?\s*" + re.escape(included) + r"\s*(?:[,;|].*)?$")
    for f in _admin_files(dialplan_dir):
        current = None
        for n, text in enumerate(_lines(f), 1):
            s = section.match(text)
            if s is not None:
                current = s.group(1).strip()
            elif current == context and include.match(text):
                return f, n
    return dialplan_dir, None


def _unterminated_comments(path: Path) -> list[int]:
    """Lines where a ``;--`` block comment opens and never closes (Asterisk's config.c rules)."""
    nest: list[int] = []
    for lineno, line in enumerate(_lines(path), 1):
        i = start = 0
        while (p := line.find(";", i)) >= 0:
            if p > start and line[p - 1] == "\\":        # escaped semicolon
                i = p + 1
            elif line[p + 1:p + 3] == "--" and line[p + 3:p + 4] != "-":
                nest.append(lineno)
                i = start = p + 3
            elif p >= start + 2 and line[p - 2:p] == "--":
                if nest:
                    nest.pop()
                i = start = p + 1
            elif not nest:                                 # a ; line comment
                break
            else:
                i = p + 1
    return nest


# ------------------------------------------------------------------------------------------
# `dialplan show` -> problems


def unknown_applications(show: str, applications: str, dialplan_dir: Path) -> list[Problem]:
    """Applications used by the admin's files that this Asterisk has not loaded.

    pbx_config accepts any name; the call would only fail when it reaches that priority
    ("No application 'X' for extension"), which on a 112 line is too late.
    """
    loaded = {m.group("name").lower() for raw in applications.splitlines()
              if (m := _APPLICATION.match(raw))}
    admin = {f.name for f in _admin_files(dialplan_dir)}
    problems = []
    for raw in show.splitlines():
        m = _SHOW_PRIORITY.search(raw)
        if m is None or m.group("file") not in admin:
            continue
        app = m.group("app")
        if app.lower() not in loaded:
            problems.append(Problem(dialplan_dir / m.group("file"), int(m.group("line")),
                                    f"unknown application '{app}' (not loaded in this Asterisk; "
                                    "see `core show applications`)"))
    return problems


def missing_contexts(show: str, dialplan_dir: Path) -> list[Problem]:
    """Contexts our rendered config sends calls to, which the admin's files must define."""
    defined = {m.group("name") for raw in show.splitlines() if (m := _SHOW_CONTEXT.match(raw))}
    return [Problem(dialplan_dir, None, f"context '{name}' is not defined; it is {why}")
            for name, why in REQUIRED_CONTEXTS.items() if name not in defined]


# ------------------------------------------------------------------------------------------
# reload


_INCLUDE_LINE = re.compile(r'^#include "dialplan/[^"]+"\s*$')


def reload(site: Site, var_dir: Path, dialplan_dir: Path) -> CheckResult:
    """Check ``dialplan_dir``; only if it passes, install it into the live config and reload.

    The live config is ``<var_dir>/asterisk/etc``: the admin's files are copied to
    ``etc/dialplan/`` under their own names and the ``#include "dialplan/..."`` lines of
    ``etc/extensions.conf`` are rewritten to list exactly those files (as render() would).
    Nothing else is re-rendered (no new ARI password, no PJSIP change).
    Raises AsteriskError when the live Asterisk does not answer (nothing is changed then).
    """
    result = check(site, dialplan_dir)
    if not result.ok:
        log.warning("dialplan reload refused: %d error(s) in %s", len(result.errors), dialplan_dir)
        return result
    var_dir = var_dir.resolve()
    etc = var_dir / "asterisk" / "etc"
    extensions = etc / "extensions.conf"
    if not extensions.exists():
        raise AsteriskError(f"{extensions} is not rendered; start Asterisk first")
    cli(var_dir, "core show version")  # the live Asterisk answers before we touch its files
    files = _admin_files(dialplan_dir.resolve())
    (etc / "dialplan").mkdir(exist_ok=True)
    for src in files:
        _write_atomic(etc / "dialplan" / src.name, src.read_bytes())
    _write_atomic(extensions, _with_includes(extensions.read_text(), [f.name for f in files]).encode())
    out = cli(var_dir, "dialplan reload")
    if "Dialplan reloaded" not in out:
        result.problems.append(Problem(dialplan_dir, None,
                                       f"live `dialplan reload` said: {out.strip() or 'nothing'}"))
    else:
        log.info("dialplan reloaded on the live Asterisk from %s (%d files)", dialplan_dir, len(files))
    return result


def _with_includes(text: str, names: list[str]) -> str:
    """``extensions.conf`` with its dialplan #include block replaced by ``names``, in place."""
    lines = text.splitlines()
    block = [f'#include "dialplan/{name}"' for name in names]
    kept: list[str] = []
    at: int | None = None
    for line in lines:
        if _INCLUDE_LINE.match(line):
            if at is None:
                at = len(kept)
            continue
        kept.append(line)
    if at is None:
        at = len(kept)
    return "\n".join(kept[:at] + block + kept[at:]) + "\n"


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
