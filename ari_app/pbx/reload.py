"""Put an operator change into the running Asterisk: rewrite the operator files, reload.

Why a reload of rendered files and not PJSIP realtime: the same two reloads work on SQLite and
PostgreSQL with no ODBC/res_config_* module per backend, the fallback's every-operator list
(a dialplan global) changes by the same step, and the rendered files are what an admin can read.
``module reload res_pjsip.so`` replaces the endpoint, auth and AOR objects; channels hold their
own references, so a call in progress (even with a removed operator) goes on. ``dialplan
reload`` swaps the contexts under running channels without touching them.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ari_app.pbx.process import AsteriskError, cli, running_pid
from ari_app.pbx.render import OperatorEndpoint, write_operator_files

log = logging.getLogger(__name__)


@dataclass
class ReloadResult:
    written: list[Path] = field(default_factory=list)
    reloaded: bool = False          # the running Asterisk took the new files
    problem: str = ""               # why it did not (Asterisk down, a reload refused)
    failed: bool = False            # Asterisk runs but did not take them: the admin must act

    def describe(self) -> str:
        if self.reloaded:
            return "Asterisk reloaded PJSIP and the dialplan (no restart, calls untouched)"
        if not self.written:
            return f"Asterisk config not rendered yet: {self.problem}"
        return f"operator files written; {self.problem}"


def apply_operators(var_dir: Path, ops: Iterable[OperatorEndpoint], *, tls: bool = False) -> ReloadResult:
    """Rewrite the operator files under ``var_dir/asterisk/etc`` and reload our Asterisk.

    ``tls``: the site's operator phones use SIP TLS + SRTP (as rendered into pjsip.conf).
    """
    etc = var_dir.resolve() / "asterisk" / "etc"
    if not (etc / "pjsip.conf").exists():
        return ReloadResult(problem="run `siaga112 asterisk start` (it renders them)")
    result = ReloadResult(written=write_operator_files(etc, ops, tls))
    if running_pid(var_dir) is None:
        result.problem = "Asterisk is not running: it reads them when it starts"
        return result
    try:
        for _attempt in range(10):  # a reload already running would not read the new files
            pjsip = cli(var_dir, "module reload res_pjsip.so")
            if "already being reloaded" not in pjsip:
                break
            time.sleep(0.3)
        dialplan = cli(var_dir, "dialplan reload")
    except (AsteriskError, subprocess.TimeoutExpired, OSError) as exc:
        result.problem = f"Asterisk did not reload: {exc}"
        result.failed = True
        log.error("operator change: %s", result.problem)
        return result
    if "reloaded successfully" not in pjsip:
        result.problem = f"`module reload res_pjsip.so` said: {pjsip.strip() or 'nothing'}"
        result.failed = True
    elif "Dialplan reloaded" not in dialplan:
        result.problem = f"`dialplan reload` said: {dialplan.strip() or 'nothing'}"
        result.failed = True
    else:
        result.reloaded = True
        log.info("operator change reloaded into Asterisk (%s)", ", ".join(p.name for p in
                                                                          result.written))
    return result
