"""`dialplan check` / `dialplan reload` against a real Asterisk (throw-away and live)."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ari_app.config import Site
from ari_app.pbx.dialplan_check import CheckResult, Problem, check, reload
from ari_app.pbx.render import DIALPLAN_DIR
from ari_app.testing.asterisk import PrivateAsterisk, on_free_ports

pytestmark = pytest.mark.integration


def copy_dialplan(tmp_path: Path) -> Path:
    target = tmp_path / "dialplan"
    shutil.copytree(DIALPLAN_DIR, target)
    return target


def append(path: Path, text: str) -> int:
    """Append ``text`` to ``path``; return the line number of its first line."""
    old = path.read_text() if path.exists() else ""
    if old and not old.endswith("\n"):
        old += "\n"
    path.write_text(old + text)
    return len(old.splitlines()) + 1


@dataclass(frozen=True)
class Breakage:
    file: str         # the admin's file that is broken
    text: str         # appended to it
    offset: int       # which appended line (0-based) the problem is on
    needle: str       # in the message


BREAKAGES = {
    "missing-paren": Breakage("20-emergency.conf",
                              "\n[siaga112-broken]\nexten => 112,1,Goto(\n same => n,Hangup()\n",
                              2, "No closing parenthesis"),
    "same-first": Breakage("50-broken.conf", "[siaga112-broken]\n same => n,Answer()\n",
                           1, "No previous pattern"),
    "next-first": Breakage("50-broken.conf", "[siaga112-broken]\n\nexten => 5,n,Answer()\n",
                           2, "Can't use 'next' priority on the first entry"),
    "unknown-app": Breakage("40-operators.conf", "exten => 555,1,Answer()\n same => n,Dail(PJSIP/x)\n",
                            1, "unknown application 'Dail'"),
    "duplicate": Breakage("40-operators.conf", "exten => *43,1,NoOp(again)\n",
                          0, "already in use"),
    "missing-include": Breakage("30-fallback.conf", '#include "dialplan/nope.conf"\n',
                                0, "#include of missing file 'dialplan/nope.conf'"),
    "nonexistent-context": Breakage("10-carrier.conf", "include => siaga112-nope\n",
                                    0, "includes 'siaga112-nope', which does not exist"),
    "unterminated-comment": Breakage("30-fallback.conf", "\n;-- forgot to close it\n",
                                     1, "unterminated block comment"),
}


def test_shipped_dialplan_passes(jepara: Site, tmp_path: Path) -> None:
    result = check(jepara, DIALPLAN_DIR, work_dir=tmp_path / "work")
    assert result.ok, result.format()
    assert result.errors == []
    assert not (tmp_path / "work" / "asterisk" / "run" / "siaga112-asterisk.pid").exists()


@pytest.mark.parametrize("name", sorted(BREAKAGES))
def test_broken_dialplan_is_refused_with_file_and_line(jepara: Site, tmp_path: Path,
                                                       name: str) -> None:
    broken = BREAKAGES[name]
    dialplan = copy_dialplan(tmp_path)
    line = append(dialplan / broken.file, broken.text) + broken.offset

    result = check(jepara, dialplan)

    assert not result.ok
    wanted = [p for p in result.errors if broken.needle in p.message]
    assert wanted, result.format()
    assert (wanted[0].file, wanted[0].line) == (dialplan / broken.file, line), result.format()
    assert f"{dialplan / broken.file}:{line}: " in result.format()


def test_missing_required_context_is_refused(jepara: Site, tmp_path: Path) -> None:
    dialplan = copy_dialplan(tmp_path)
    path = dialplan / "20-emergency.conf"
    path.write_text(path.read_text().replace("[siaga112-emergency]", "[siaga112-emergncy]"))
    result = check(jepara, dialplan)
    assert not result.ok
    assert any("context 'siaga112-emergency' is not defined" in p.message for p in result.errors), \
        result.format()


def test_discouraged_pattern_is_only_a_warning(jepara: Site, tmp_path: Path) -> None:
    dialplan = copy_dialplan(tmp_path)
    line = append(dialplan / "50-catchall.conf", "[siaga112-catchall]\nexten => _.,1,NoOp()\n") + 1
    result = check(jepara, dialplan)
    assert result.ok, result.format()
    assert [(p.file, p.line, p.severity) for p in result.warnings] == [
        (dialplan / "50-catchall.conf", line, "warning")]
    assert Problem(dialplan / "x.conf", 3, "msg", "warning").format() == f"{dialplan}/x.conf:3: warning: msg"


# ------------------------------------------------------------------------------------------
# reload on a live Asterisk


@pytest.fixture
def live(jepara: Site, tmp_path: Path,
         cleanup: Callable[[Callable[[], object]], None]) -> Iterator[PrivateAsterisk]:
    """A live Asterisk rendered with the shipped dialplan, as `siaga112 asterisk start` does."""
    var = tmp_path / "live"
    var.mkdir()
    ast = PrivateAsterisk(on_free_ports(jepara), var)
    cleanup(ast.stop)
    ast.start()
    yield ast


MARKER = "[siaga112-test-marker]\nexten => 4242,1,NoOp(dialplan-reload-marker)\n same => n,Hangup()\n"


def _reload(ast: PrivateAsterisk, dialplan: Path) -> CheckResult:
    return reload(ast.site, ast.var_dir, dialplan)


def test_reload_refuses_a_broken_dialplan_and_keeps_the_old_one(live: PrivateAsterisk,
                                                               tmp_path: Path) -> None:
    before = live.cli("dialplan show siaga112-emergency")
    assert "Stasis(" in before
    live_copy = live.var_dir / "asterisk" / "etc" / "dialplan" / "20-emergency.conf"
    live_text = live_copy.read_text()

    dialplan = copy_dialplan(tmp_path)
    path = dialplan / "20-emergency.conf"
    path.write_text(path.read_text().replace("same => n,Hangup()", "same => n,Hangup(", 1))
    append(dialplan / "50-marker.conf", MARKER)

    result = _reload(live, dialplan)

    assert not result.ok
    assert any(p.file == path and "No closing parenthesis" in p.message for p in result.errors), \
        result.format()
    assert live.cli("dialplan show siaga112-emergency") == before
    assert "dialplan-reload-marker" not in live.cli("dialplan show")
    assert live_copy.read_text() == live_text
    assert not (live.var_dir / "asterisk" / "etc" / "dialplan" / "50-marker.conf").exists()


def test_reload_installs_a_valid_dialplan(live: PrivateAsterisk, tmp_path: Path) -> None:
    before = live.cli("dialplan show siaga112-emergency")
    assert "dialplan-reload-marker" not in live.cli("dialplan show")
    dialplan = copy_dialplan(tmp_path)
    append(dialplan / "50-marker.conf", MARKER)

    result = _reload(live, dialplan)

    assert result.ok, result.format()
    shown = live.cli("dialplan show siaga112-test-marker")
    assert "NoOp(dialplan-reload-marker)" in shown
    assert "[50-marker.conf:2]" in shown
    assert live.cli("dialplan show siaga112-emergency") == before
    extensions = (live.var_dir / "asterisk" / "etc" / "extensions.conf").read_text()
    # the shipped files plus the marker
    assert extensions.count('#include "dialplan/') == len(list(DIALPLAN_DIR.glob("*.conf"))) + 1
    assert '#include "dialplan/50-marker.conf"' in extensions
    assert "SIAGA_APP = " in extensions  # the rest of the rendered file is untouched
