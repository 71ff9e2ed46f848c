"""Which Asterisk: version detection, the supported-version gate, per-version module lists."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from ari_app.pbx import installation as inst
from ari_app.pbx.installation import Installation, InstallationError, parse_version
from ari_app.pbx.render import VERSION_MODULES, RenderError, check_modules, version_modules


def fake_asterisk(tmp_path: Path, banner: str) -> Path:
    """A stand-in binary that only answers ``-V`` (the gate is pure logic over its output)."""
    mods = tmp_path / "lib" / "asterisk" / "modules"
    mods.mkdir(parents=True)
    (mods / "res_ari.so").write_text("")
    binary = tmp_path / "sbin" / "asterisk"
    binary.parent.mkdir()
    binary.write_text(f"#!/bin/sh\necho '{banner}'\n")
    binary.chmod(0o755)
    return binary


def test_version_is_read_from_the_banner() -> None:
    assert parse_version("Asterisk 22.10.1+dfsg+~cs6.17.60671434-1\n") == (
        "22.10.1+dfsg+~cs6.17.60671434-1", 22)
    assert parse_version("Asterisk 16.28.0~dfsg-0+deb11u4") == ("16.28.0~dfsg-0+deb11u4", 16)
    with pytest.raises(InstallationError, match="cannot read an Asterisk version"):
        parse_version("bash: asterisk: command not found")


def test_own_binary_is_detected_and_an_unsupported_version_is_a_clear_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    binary = fake_asterisk(tmp_path, "Asterisk 20.11.0")
    monkeypatch.setenv("SIAGA112_ASTERISK_BIN", str(binary))
    found = inst.installation()
    assert (found.major, found.version, found.command) == (20, "20.11.0", (str(binary),))
    assert found.module_dir == str(tmp_path / "lib" / "asterisk" / "modules")
    old = fake_asterisk(tmp_path / "old", "Asterisk 18.20.0")
    monkeypatch.setenv("SIAGA112_ASTERISK_BIN", str(old))
    with pytest.raises(InstallationError, match=r"18\.20\.0 is not supported .*16, 20, 22"):
        inst.installation()


def test_unknown_choice_and_missing_root_say_what_to_do(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("SIAGA112_ASTERISK_BIN", raising=False)
    monkeypatch.setenv("SIAGA112_ASTERISK", "13")
    with pytest.raises(InstallationError, match=r"expected 22 .* or 16"):
        inst.installation()
    monkeypatch.setenv("SIAGA112_ASTERISK", "22")
    monkeypatch.setenv("SIAGA112_ASTERISK_ROOT", str(tmp_path / "nothing"))
    with pytest.raises(InstallationError, match=r"run \./scripts/setup\.sh"):
        inst.installation()


def test_the_pin_is_read_from_the_one_pin_file() -> None:
    text = inst.PIN_FILE.read_text()
    assert f"ASTERISK_22_PACKAGE='{inst.ASTERISK_22_PACKAGE}'" in text
    assert inst.ASTERISK_22_PACKAGE.startswith("1:22.")
    assert str(inst.PRIVATE_ROOT).startswith("/opt/siaga112/asterisk-22.")


def _ast(tmp_path: Path, major: int, present: list[str]) -> Installation:
    for m in present:
        (tmp_path / m).write_text("")
    return Installation(("asterisk",), str(tmp_path), "/d", "/s", f"{major}.1.0", major)


def test_22_loads_websocket_client_16_does_not_and_20_only_where_the_build_has_it(
    tmp_path: Path,
) -> None:
    assert version_modules(_ast(tmp_path, 22, [])) == ["res_websocket_client.so"]
    assert version_modules(_ast(tmp_path, 16, [])) == []
    assert version_modules(_ast(tmp_path, 20, [])) == []
    assert version_modules(_ast(tmp_path, 20, ["res_websocket_client.so"])) == [
        "res_websocket_client.so"]
    gone = {"chan_sip.so", "app_macro.so", "res_monitor.so"}  # gone since 21
    common = (Path(__file__).parents[2] / "config" / "asterisk" / "modules.conf").read_text()
    assert not any(f"=> {m}" in common for m in gone)
    assert set(VERSION_MODULES) == set(inst.SUPPORTED_MAJORS)


def test_a_module_the_version_lacks_is_a_render_error_naming_it(tmp_path: Path) -> None:
    ast = _ast(tmp_path, 22, ["res_ari.so"])
    conf = "[modules]\nload => res_ari.so\nload => res_nothing.so\n"
    with pytest.raises(RenderError, match=r"res_nothing\.so not in .*22\.1\.0.*VERSION_MODULES"):
        check_modules(conf, ast)
    dropped = dict(VERSION_MODULES)
    dropped[22] = dataclasses.replace(VERSION_MODULES[22], drop=frozenset({"res_nothing.so"}))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("ari_app.pbx.render.VERSION_MODULES", dropped)
        assert check_modules(conf, ast) == "[modules]\nload => res_ari.so\n"


def test_a_private_root_runs_through_its_own_loader_and_libraries() -> None:
    root = Path("/opt/siaga112/asterisk-22.10.1")
    assert inst.root_command(root) == (
        "/opt/siaga112/asterisk-22.10.1/lib64/ld-linux-x86-64.so.2", "--library-path",
        "/opt/siaga112/asterisk-22.10.1/lib/x86_64-linux-gnu:"
        "/opt/siaga112/asterisk-22.10.1/usr/lib/x86_64-linux-gnu",
        "/opt/siaga112/asterisk-22.10.1/usr/sbin/asterisk")


def test_setup_never_stops_or_reconfigures_a_service_it_did_not_start() -> None:
    """Issue 14/17: no `systemctl disable --now asterisk`, `service ... stop`, `pkill`, and no
    policy-rc.d (not ours to write) in the scripts that install and run things."""
    scripts = Path(__file__).parents[2] / "scripts"
    for name in ("setup.sh", "test.sh", "run.sh"):
        code = "\n".join(line.split("#", 1)[0] for line in (scripts / name).read_text().splitlines())
        for forbidden in ("systemctl", "service ", "pkill", "killall", "policy-rc.d"):
            assert forbidden not in code, f"scripts/{name} uses {forbidden!r}"
