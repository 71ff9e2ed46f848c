"""Site settings for security: SIP TLS on by default beyond loopback, retention, metrics."""

from __future__ import annotations

import tomllib

import pytest

from ari_app.config import SITES_DIR, ConfigError, parse_site


def site_with(**tables: dict[str, object]) -> dict[str, object]:
    data = tomllib.loads((SITES_DIR / "jepara.toml").read_text())
    for name, values in tables.items():
        data.setdefault(name, {}).update(values)
    return data


@pytest.mark.parametrize(("bind", "setting", "tls"), [
    ("127.0.0.1", "auto", False), ("10.20.0.5", "auto", True), ("10.20.0.5", "off", False),
    ("127.0.0.1", "on", True), ("[::1]", "auto", False)])
def test_operator_tls_is_on_by_default_when_asterisk_binds_beyond_loopback(
        monkeypatch: pytest.MonkeyPatch, bind: str, setting: str, tls: bool) -> None:
    monkeypatch.delenv("SIAGA112_BIND", raising=False)
    site = parse_site("x.toml", site_with(asterisk={"bind": bind, "operator_tls": setting}))
    assert site.asterisk.operators_use_tls is tls


def test_bad_security_settings_name_the_key() -> None:
    with pytest.raises(ConfigError, match=r"asterisk.operator_tls: expected one of auto, on, off"):
        parse_site("x.toml", site_with(asterisk={"operator_tls": "yes"}))
    with pytest.raises(ConfigError, match=r"asterisk.tls_key: expected both tls_cert and tls_key"):
        parse_site("x.toml", site_with(asterisk={"tls_cert": "/etc/ssl/a.pem"}))
    with pytest.raises(ConfigError, match=r"retention.recordings_days: expected an integer 1..36500"):
        parse_site("x.toml", site_with(retention={"recordings_days": 0}))
    with pytest.raises(ConfigError, match=r"web.metrics_loopback_open: expected true or false"):
        parse_site("x.toml", site_with(web={"metrics_loopback_open": "no"}))


def test_retention_defaults_and_values() -> None:
    site = parse_site("x.toml", site_with(retention={"recordings_days": 90, "personal_days": 365}))
    assert (site.retention.recordings_days, site.retention.personal_days) == (90, 365)
    assert parse_site("x.toml", site_with()).retention.recordings_days == 365
