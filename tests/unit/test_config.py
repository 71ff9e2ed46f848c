"""Site configuration: both programmes load; bad files give one actionable line."""

from __future__ import annotations

import subprocess
import sys
from datetime import time
from pathlib import Path

import pytest

from ari_app.config import SITES_DIR, ConfigError, load_site


def test_jepara_is_open_seven_to_nine_wib_with_forward_policy() -> None:
    site = load_site("jepara")
    assert site.reference_prefix == "JPR"
    assert str(site.timezone) == "Asia/Jakarta"
    assert site.is_open(time(7, 0)) and site.is_open(time(20, 59))
    assert not site.is_open(time(21, 0)) and not site.is_open(time(6, 59))
    assert site.out_of_hours.policy == "forward"
    categories = {o.category for o in site.menu.options.values()}
    assert {"health", "fire", "natural_disaster", "traffic", "police", "complaint"} <= categories


def test_batola_is_open_around_the_clock_in_wita() -> None:
    site = load_site("batola")
    assert site.reference_prefix == "BTL"
    assert str(site.timezone) == "Asia/Makassar"
    assert site.is_open(time(3, 0)) and site.is_open(time(23, 59))
    categories = {o.category for o in site.menu.options.values()}
    assert {"fire", "accident", "crime", "natural_disaster", "medical"} <= categories
    assert site.stasis_app != load_site("jepara").stasis_app


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def _jepara_with(old: str, new: str, tmp_path: Path) -> Path:
    text = (SITES_DIR / "jepara.toml").read_text()
    assert old in text
    return _write(tmp_path, text.replace(old, new, 1))


def test_bad_opening_time_names_file_key_expected_and_found(tmp_path: Path) -> None:
    path = _jepara_with('open = "07:00"', 'open = "7am"', tmp_path)
    with pytest.raises(ConfigError) as err:
        load_site(path)
    assert str(err.value).endswith('hours.open: expected HH:MM, got "7am"')
    assert "site.toml" in str(err.value)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('timezone = "Asia/Jakarta"', 'timezone = "Asia/Jepara"',
         'site.timezone: expected an IANA time zone such as Asia/Jakarta, got "Asia/Jepara"'),
        ('reference_prefix = "JPR"', 'reference_prefix = "jp"',
         'site.reference_prefix: expected 2-5 capital letters, got "jp"'),
        ("sip_port = 5060", "sip_port = 99999", "asterisk.sip_port: expected an integer 1..65535"),
        ("fastagi_port = 4573", "fastagi_port = 0",
         "asterisk.fastagi_port: expected an integer 1..65535"),
        ('digit = "2"', 'digit = "1"', 'menu.options[1].digit: expected a digit not used twice'),
        ('category = "fire"', 'category = "fyre"', "menu.options[1].category: expected one of"),
        ('forward_number = "110"', '', 'out_of_hours.forward_number: expected a dialable number'),
        ("[queue]", "[queue]\nring_timout_s = 3", "queue.ring_timout_s: expected a known key"),
    ],
)
def test_each_bad_value_is_named_precisely(old: str, new: str, message: str,
                                           tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        load_site(_jepara_with(old, new, tmp_path))
    assert message in str(err.value)


def test_missing_file_and_broken_toml_are_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as missing:
        load_site(tmp_path / "nowhere.toml")
    assert "nowhere.toml" in str(missing.value) and "existing site file" in str(missing.value)
    with pytest.raises(ConfigError) as broken:
        load_site(_write(tmp_path, "[site\ncode = 1"))
    assert "site.toml: (syntax): expected valid TOML" in str(broken.value)


@pytest.mark.parametrize("content", [None, 'x = "unclosed'])
def test_cli_exits_2_with_one_line_naming_the_file(tmp_path: Path, content: str | None) -> None:
    path = tmp_path / "broken.toml"
    if content is not None:
        path.write_text(content)
    out = subprocess.run(
        [sys.executable, "-m", "ari_app.cli", "--site", str(path), "--var-dir", str(tmp_path),
         "asterisk", "render"], capture_output=True, text=True, timeout=60, check=False)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "broken.toml" in lines[0]
