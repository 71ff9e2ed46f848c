"""[smtp] in a site file: optional, validated with one actionable line; agency addresses too."""

from __future__ import annotations

from pathlib import Path

import pytest

from ari_app.config import SITES_DIR, ConfigError, is_email_address, load_site
from ari_app.web.agencies import load_agencies

GOOD = '[smtp]\nhost = "mail.jeparakab.go.id"\nfrom = "112@jeparakab.go.id"\n'


def _jepara_plus(tmp_path: Path, section: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text((SITES_DIR / "jepara.toml").read_text() + "\n" + section)
    return path


def test_shipped_sites_send_no_mail_until_an_admin_configures_it() -> None:
    assert load_site("jepara").smtp is None and load_site("batola").smtp is None


def test_smtp_section_defaults_to_submission_port_with_starttls(tmp_path: Path) -> None:
    smtp = load_site(_jepara_plus(tmp_path, GOOD)).smtp
    assert smtp is not None
    assert (smtp.host, smtp.port, smtp.from_address, smtp.starttls, smtp.username) == (
        "mail.jeparakab.go.id", 587, "112@jeparakab.go.id", True, None)


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('[smtp]\nfrom = "112@jeparakab.go.id"\n', "smtp.host: expected a mail server host name or IP, "
                                                    "got nothing (key missing)"),
        (GOOD.replace('"112@jeparakab.go.id"', '"112 at jepara"'),
         'smtp.from: expected an e-mail address like 112@jeparakab.go.id, got "112 at jepara"'),
        (GOOD + "port = 70000\n", "smtp.port: expected an integer 1..65535, got 70000"),
        (GOOD + 'starttls = "yes"\n', 'smtp.starttls: expected true or false, got "yes"'),
        (GOOD + 'password = "x"\n', "smtp.password: expected a known key"),
        (GOOD + 'starttls = false\nusername = "siaga"\n',
         "smtp.starttls: expected true when a username is set for a remote server, got False"),
        ('smtp = "mail.jeparakab.go.id"\n', 'smtp: expected a table, got "mail.jeparakab.go.id"'),
    ],
)
def test_bad_smtp_settings_are_named_in_one_line(tmp_path: Path, section: str, message: str) -> None:
    path = _jepara_plus(tmp_path, section) if section.startswith("[") else None
    if path is None:  # a top-level key must come before the first table
        path = tmp_path / "site.toml"
        path.write_text(section + (SITES_DIR / "jepara.toml").read_text())
    with pytest.raises(ConfigError) as err:
        load_site(path)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert "site.toml" in str(err.value)


@pytest.mark.parametrize("address", ["damkar@jeparakab.go.id", "pusdalops.bpbd+112@kalselprov.go.id"])
def test_agency_addresses_are_accepted(address: str) -> None:
    assert is_email_address(address)


@pytest.mark.parametrize("address", ["", "damkar", "damkar@jeparakab", "@jeparakab.go.id",
                                     "damkar@@jeparakab.go.id", "dam kar@jeparakab.go.id",
                                     "Damkar <damkar@jeparakab.go.id>", "damkar@jeparakab.go.id\n",
                                     "a..b@jeparakab.go.id", "damkar@-jepara.go.id"])
def test_bad_addresses_are_refused(address: str) -> None:
    assert not is_email_address(address)


def test_bad_agency_address_in_agency_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "jepara.toml").write_text('[[agency]]\ncode = "DAMKAR"\nname = "Damkar"\n'
                                          'email = "damkar@"\n')
    with pytest.raises(ConfigError) as err:
        load_agencies("jepara", tmp_path)
    assert 'agency[0].email: expected an e-mail address like damkar@jeparakab.go.id, got "damkar@"' \
        in str(err.value)
