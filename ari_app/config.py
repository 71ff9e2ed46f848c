"""Site configuration (TOML), validated at start with errors an admin can act on.

Every error names the file, the key, what was expected and what was found, e.g.
``config/sites/jepara.toml: hours.open: expected HH:MM, got "7am"``.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SITES_DIR = PROJECT_ROOT / "config" / "sites"

CATEGORIES = (
    "health", "medical", "fire", "natural_disaster", "traffic", "accident", "police", "crime",
    "complaint", "non_emergency", "uncategorised",
)
KINDS = ("emergency", "complaint", "information")
OUT_OF_HOURS_POLICIES = ("forward", "message_callback")


class ConfigError(Exception):
    """A configuration problem, phrased as ``file: key: expected X, got Y``."""

    def __init__(self, file: str, key: str, expected: str, got: Any = None, *, missing: bool = False):
        self.file, self.key = file, key
        found = "nothing (key missing)" if missing else _show(got)
        super().__init__(f"{file}: {key}: expected {expected}, got {found}")


def _show(value: Any) -> str:
    if isinstance(value, str):
        return '"' + value + '"'
    if isinstance(value, dict):
        return "a table"
    if isinstance(value, list):
        return "a list"
    return repr(value)


@dataclass(frozen=True)
class MenuOption:
    digit: str
    category: str
    priority: int
    kind: str
    agency: str | None
    label: str
    prompt: str | None = None  # played after the choice (e.g. the web/WhatsApp channel)


@dataclass(frozen=True)
class Menu:
    timeout_s: float
    invalid_repeats: int
    options: dict[str, MenuOption]
    silent_priority: int
    uncategorised_priority: int
    silent_after_s: float = 10.0  # no key and no speech this long after answer: a silent caller


@dataclass(frozen=True)
class Hours:
    always_open: bool
    open: time
    close: time


@dataclass(frozen=True)
class OutOfHours:
    policy: str
    forward_number: str | None


@dataclass(frozen=True)
class AsteriskSettings:
    bind: str
    sip_port: int
    http_port: int
    rtp_start: int
    rtp_end: int
    trunk_host: str | None  # the carrier's SBC; None means accept any loopback peer (demo)
    fastagi_port: int = 4573  # our screening server (siaga112 agi serve), on loopback only
    # SIP TLS + SRTP (SDES) for operator phones: "auto" = on when bind is beyond loopback.
    # The carrier trunk keeps plain UDP/RTP (most carriers use it).
    operator_tls: str = "auto"
    tls_port: int = 5061
    tls_cert: str | None = None   # the admin's certificate and key (PEM); else self-signed in
    tls_key: str | None = None    # var/secrets/sip-tls.{crt,key}

    @property
    def operators_use_tls(self) -> bool:
        if self.operator_tls == "auto":
            return not _is_loopback(self.bind)
        return self.operator_tls == "on"


def _is_loopback(address: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class QueueSettings:
    ring_timeout_s: float
    reminder_every_s: float
    max_operator_attempts: int
    # Ring a free operator from the answer, while the greeting and menu play (False: the old
    # order, the menu first and then the queue).
    offer_during_menu: bool = True
    # New callers are refused on the record (lines busy, 503, callback list) while the 90th
    # percentile of the app's ARI round trips is at or above this; taken again under the
    # second figure (routing/shedding.py). 0: never on latency (the line's count still holds).
    shed_when_ari_p90_ms: int = 2000
    resume_when_ari_p90_ms: int = 500


@dataclass(frozen=True)
class Screening:
    """Ghost/prank policy: warn and lower the priority; never drop, never block."""

    threshold: int          # pranks + ghosts within window_h that flag a number
    window_h: float
    priority_penalty: int   # added to the priority number (9 is the least urgent)
    budget_ms: int          # screen_caller's time budget; on time-out the call goes on unscreened
    allowlist: tuple[str, ...]


@dataclass(frozen=True)
class WebSettings:
    bind: str
    port: int
    aml_gateways: tuple[str, ...]   # each has a token (and an HMAC key) in var/secrets
    aml_require_hmac: bool
    max_body_bytes: int
    # /metrics: a bearer token (var/secrets/metrics.token) always works; without one only a
    # loopback peer is answered, and not even that when metrics_loopback_open is false
    metrics_loopback_open: bool = True
    # WhatsApp Cloud API app secret file name in var/secrets: X-Hub-Signature-256 is checked
    whatsapp_app_secret: str = "whatsapp-app.secret"
    # HTTPS: the admin's certificate and key (PEM), else a self-signed pair in var/secrets
    tls_cert: str | None = None
    tls_key: str | None = None
    # the address agencies and browsers reach us at (links in notifications); required once
    # an agency has a webhook or an e-mail address
    public_url: str | None = None
    health_port: int = 0   # plain HTTP on 127.0.0.1 serving only /healthz; 0 = none


@dataclass(frozen=True)
class Retention:
    """How long the data of people in distress is kept (UU 27/2022: only as long as needed).
    Nothing on an open ticket or a ticket under legal hold is touched."""

    recordings_days: int = 365      # call recordings of closed tickets are deleted after this
    personal_days: int = 730        # caller numbers and locations of closed tickets: anonymised
    run_every_h: float = 24.0       # `siaga112 serve` runs it on this timer (and at start)
    # Asterisk's CEL rows (var/asterisk/log/master.db) older than this are deleted, except those
    # of calls the database still holds as live: reconcile reads them only for such calls.
    cel_days: int = 30


OSM_TILES = "https://tile.openstreetmap.org/{z}/{x}/{y}.png"
OSM_ATTRIBUTION = "© OpenStreetMap contributors"


@dataclass(frozen=True)
class ConsoleSettings:
    """The operator console: wrap-up after each call, map tiles, incident suggestions."""

    wrap_up_s: float = 0.0           # 0: an operator is ready again as soon as a call ends
    tile_url: str = OSM_TILES
    tile_attribution: str = OSM_ATTRIBUTION
    incident_radius_m: float = 1000.0
    incident_window_min: float = 60.0


@dataclass(frozen=True)
class SmtpSettings:
    """Outgoing mail for agency notifications. The password, if any, is in var/secrets."""

    host: str
    port: int
    from_address: str
    starttls: bool
    username: str | None
    timeout_s: float


_LOCAL_PART = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+(\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~\-]+)*"
_DOMAIN = r"([A-Za-z0-9]([A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}"
_HOST = r"[A-Za-z0-9]([A-Za-z0-9.\-]{0,251}[A-Za-z0-9])?|\[[0-9a-fA-F:.]+\]"


def is_http_url(value: str) -> bool:
    """A webhook or evidence link: http:// or https://, nothing else (no file:, no javascript:)."""
    return value.startswith(("http://", "https://"))


def is_email_address(value: str) -> bool:
    """A plain address (local@domain.tld), no display name: what an agency mailbox looks like."""
    if len(value) > 254 or "@" not in value:
        return False
    local, _, domain = value.rpartition("@")
    return (len(local) <= 64 and re.fullmatch(_LOCAL_PART, local) is not None
            and re.fullmatch(_DOMAIN, domain) is not None)


@dataclass(frozen=True)
class EdgeConfig:
    """The SIP edge (Kamailio) in front of several nodes: where it listens, the nodes' SIP
    addresses, how often it probes them. None on a single-node site."""

    listen: str
    nodes: tuple[tuple[str, str], ...]       # (name, host:port of the node's Asterisk)
    ping_interval_s: int = 2


_HOSTPORT = r"(\d{1,3}\.){3}\d{1,3}:\d{1,5}"


@dataclass(frozen=True)
class Site:
    file: str
    code: str
    name: str
    reference_prefix: str
    stasis_app: str
    timezone: ZoneInfo
    languages: tuple[str, ...]
    numbers: tuple[str, ...]
    hours: Hours
    out_of_hours: OutOfHours
    menu: Menu
    queue: QueueSettings
    asterisk: AsteriskSettings
    other_services: dict[str, str]
    prompts: dict[str, str]
    web: WebSettings = WebSettings("127.0.0.1", 8112, ("smsgw",), False, 16384)
    screening: Screening = Screening(3, 24.0, 3, 400, ())
    non_emergency_channel: str | None = None
    smtp: SmtpSettings | None = None   # None: agency e-mail is not sent (webhooks still are)
    retention: Retention = Retention()
    console: ConsoleSettings = ConsoleSettings()
    edge: EdgeConfig | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def is_open(self, local: time) -> bool:
        if self.hours.always_open:
            return True
        if self.hours.open <= self.hours.close:
            return self.hours.open <= local < self.hours.close
        return local >= self.hours.open or local < self.hours.close  # window across midnight


class _Reader:
    """Typed access into a parsed TOML table that raises ConfigError with a dotted key path."""

    def __init__(self, file: str, data: dict[str, Any], prefix: str = "") -> None:
        self.file, self.data, self.prefix = file, data, prefix

    def _key(self, key: str) -> str:
        return f"{self.prefix}{key}"

    def table(self, key: str, *, required: bool = True) -> _Reader:
        if key not in self.data:
            if required:
                raise ConfigError(self.file, self._key(key), "a table", missing=True)
            return _Reader(self.file, {}, f"{self._key(key)}.")
        value = self.data[key]
        if not isinstance(value, dict):
            raise ConfigError(self.file, self._key(key), "a table", value)
        return _Reader(self.file, value, f"{self._key(key)}.")

    def get(self, key: str, kind: type, expected: str, default: Any = ..., ) -> Any:
        if key not in self.data:
            if default is ...:
                raise ConfigError(self.file, self._key(key), expected, missing=True)
            return default
        value = self.data[key]
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            if abs(value) > 2**53:
                raise ConfigError(self.file, self._key(key), expected, "a number too large")
            value, ok = float(value), True
        if not ok:
            raise ConfigError(self.file, self._key(key), expected, value)
        return value

    def string(self, key: str, default: Any = ..., pattern: str | None = None,
               expected: str = "a string") -> Any:
        value = self.get(key, str, expected, default)
        if value is not None and value is not default and pattern and not re.fullmatch(pattern, value):
            raise ConfigError(self.file, self._key(key), expected, value)
        return value

    def integer(self, key: str, lo: int, hi: int, default: Any = ...) -> int:
        expected = f"an integer {lo}..{hi}"
        value: int = self.get(key, int, expected, default)
        if not lo <= value <= hi:
            raise ConfigError(self.file, self._key(key), expected, value)
        return value

    def number(self, key: str, lo: float, hi: float, default: Any = ...) -> float:
        expected = f"a number {lo:g}..{hi:g}"
        value: float = self.get(key, float, expected, default)
        if not lo <= value <= hi:
            raise ConfigError(self.file, self._key(key), expected, value)
        return value

    def clock(self, key: str) -> time:
        raw = self.get(key, str, "HH:MM")
        m = re.fullmatch(r"([01]\d|2[0-3]):([0-5]\d)", raw)
        if not m:
            raise ConfigError(self.file, self._key(key), "HH:MM", raw)
        return time(int(m.group(1)), int(m.group(2)))

    def choice(self, key: str, choices: tuple[str, ...], default: Any = ...) -> Any:
        expected = "one of " + ", ".join(choices)
        value = self.get(key, str, expected, default)
        if value is not default and value not in choices:
            raise ConfigError(self.file, self._key(key), expected, value)
        return value

    def unknown_keys(self, allowed: set[str]) -> None:
        for key in self.data:
            if key not in allowed:
                raise ConfigError(self.file, self._key(key), "a known key (" + ", ".join(
                    sorted(allowed)) + ")", key)


_DIAL = r"\+?[0-9*#]{2,20}"


def _env_int(name: str, default: int, file: str) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isdigit() or not 1 <= int(raw) <= 65535:
        raise ConfigError(f"environment {name}", name, "a port 1..65535", raw)
    return int(raw)


def _health_port(w: _Reader, file: str) -> int:
    raw = os.environ.get("SIAGA112_HEALTH_PORT")
    if raw == "0":
        return 0
    return _env_int("SIAGA112_HEALTH_PORT", w.integer("health_port", 0, 65535, 0), file)


def parse_site(file: str, data: dict[str, Any]) -> Site:
    root = _Reader(file, data)
    root.unknown_keys({"site", "hours", "out_of_hours", "menu", "queue", "asterisk",
                       "other_services", "prompts", "web", "screening", "smtp", "retention",
                       "console", "edge", "extra"})
    s = root.table("site")
    s.unknown_keys({"code", "name", "reference_prefix", "stasis_app", "timezone", "languages",
                    "numbers", "non_emergency_channel"})
    tzname = s.string("timezone")
    try:
        tz = ZoneInfo(tzname)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # "Asia" is a directory, not a zone
        raise ConfigError(file, "site.timezone", "an IANA time zone such as Asia/Jakarta",
                          tzname) from None
    languages = s.get("languages", list, "a list of language codes", ["id", "en"])
    if not languages or not all(isinstance(x, str) and re.fullmatch(r"[a-z]{2}", x)
                                for x in languages):
        raise ConfigError(file, "site.languages", "a list of two-letter language codes", languages)
    numbers = s.get("numbers", list, "a list of dialled numbers", ["112"])
    if not numbers or not all(isinstance(x, str) and re.fullmatch(_DIAL, x) for x in numbers):
        raise ConfigError(file, "site.numbers", "a list of dialled numbers like \"112\"", numbers)

    h = root.table("hours")
    h.unknown_keys({"always_open", "open", "close"})
    always = h.get("always_open", bool, "true or false", False)
    hours = Hours(always, h.clock("open") if not always else time(0),
                  h.clock("close") if not always else time(0))

    o = root.table("out_of_hours", required=not always)
    o.unknown_keys({"policy", "forward_number"})
    policy = o.choice("policy", OUT_OF_HOURS_POLICIES, "message_callback")
    forward = o.string("forward_number", None, _DIAL, "a dialable number")
    if policy == "forward" and not forward:
        raise ConfigError(file, "out_of_hours.forward_number",
                          "a dialable number when policy is \"forward\"", missing=True)

    m = root.table("menu")
    m.unknown_keys({"timeout_s", "invalid_repeats", "silent_priority", "uncategorised_priority",
                    "silent_after_s", "options"})
    raw_options = m.get("options", list, "a list of [[menu.options]] tables")
    options: dict[str, MenuOption] = {}
    for i, raw in enumerate(raw_options):
        if not isinstance(raw, dict):
            raise ConfigError(file, f"menu.options[{i}]", "a table", raw)
        r = _Reader(file, raw, f"menu.options[{i}].")
        r.unknown_keys({"digit", "category", "priority", "kind", "agency", "label", "prompt"})
        digit = r.string("digit", pattern=r"[0-9]", expected="one digit 0-9")
        if digit in options:
            raise ConfigError(file, f"menu.options[{i}].digit", "a digit not used twice", digit)
        options[digit] = MenuOption(
            digit=digit,
            category=r.choice("category", CATEGORIES),
            priority=r.integer("priority", 1, 9),
            kind=r.choice("kind", KINDS, "emergency"),
            agency=r.string("agency", None, r"[A-Z0-9_]{2,20}", "an agency code like DAMKAR"),
            label=r.string("label"),
            prompt=r.string("prompt", None),
        )
    menu = Menu(
        timeout_s=m.number("timeout_s", 1, 30, 5.0),
        invalid_repeats=m.integer("invalid_repeats", 0, 3, 1),
        options=options,
        silent_priority=m.integer("silent_priority", 1, 9, 1),
        uncategorised_priority=m.integer("uncategorised_priority", 1, 9, 3),
        silent_after_s=m.number("silent_after_s", 2, 14, 10.0),
    )

    q = root.table("queue", required=False)
    q.unknown_keys({"ring_timeout_s", "reminder_every_s", "max_operator_attempts",
                    "offer_during_menu", "shed_when_ari_p90_ms", "resume_when_ari_p90_ms"})
    shed_ms = q.integer("shed_when_ari_p90_ms", 0, 10000, 2000)
    resume_ms = q.integer("resume_when_ari_p90_ms", 1, 10000, min(500, max(1, shed_ms // 2)))
    if shed_ms and resume_ms >= shed_ms:
        raise ConfigError(file, "queue.resume_when_ari_p90_ms",
                          f"a figure below queue.shed_when_ari_p90_ms ({shed_ms})", resume_ms)
    queue = QueueSettings(
        ring_timeout_s=q.number("ring_timeout_s", 2, 120, 15.0),
        reminder_every_s=q.number("reminder_every_s", 5, 300, 20.0),
        max_operator_attempts=q.integer("max_operator_attempts", 1, 1000, 100),
        offer_during_menu=q.get("offer_during_menu", bool, "true or false", True),
        shed_when_ari_p90_ms=shed_ms, resume_when_ari_p90_ms=resume_ms,
    )

    a = root.table("asterisk", required=False)
    a.unknown_keys({"bind", "sip_port", "http_port", "rtp_start", "rtp_end", "trunk_host",
                    "fastagi_port", "operator_tls", "tls_port", "tls_cert", "tls_key"})
    ast = AsteriskSettings(
        bind=os.environ.get("SIAGA112_BIND") or a.string(
            "bind", "127.0.0.1", r"[0-9.]+|\[[0-9a-fA-F:]+\]", "an IP address"),
        sip_port=_env_int("SIAGA112_SIP_PORT", a.integer("sip_port", 1, 65535, 5060), file),
        http_port=_env_int("SIAGA112_HTTP_PORT", a.integer("http_port", 1, 65535, 8088), file),
        rtp_start=_env_int("SIAGA112_RTP_START", a.integer("rtp_start", 1024, 65535, 10000), file),
        rtp_end=_env_int("SIAGA112_RTP_END", a.integer("rtp_end", 1024, 65535, 20000), file),
        trunk_host=a.string("trunk_host", None, r"[A-Za-z0-9.:\-]+", "a host name or IP"),
        fastagi_port=_env_int("SIAGA112_FASTAGI_PORT",
                              a.integer("fastagi_port", 1, 65535, 4573), file),
        operator_tls=a.choice("operator_tls", ("auto", "on", "off"), "auto"),
        tls_port=_env_int("SIAGA112_TLS_PORT", a.integer("tls_port", 1, 65535, 5061), file),
        tls_cert=a.string("tls_cert", None),
        tls_key=a.string("tls_key", None),
    )
    if (ast.tls_cert is None) != (ast.tls_key is None):
        raise ConfigError(file, "asterisk.tls_key" if ast.tls_key is None else "asterisk.tls_cert",
                          "both tls_cert and tls_key, or neither (a self-signed pair is made)",
                          missing=True)
    if ast.rtp_end <= ast.rtp_start:
        raise ConfigError(file, "asterisk.rtp_end", f"a port above rtp_start ({ast.rtp_start})",
                          ast.rtp_end)

    other = root.table("other_services", required=False)
    services: dict[str, str] = {}
    for key in other.data:
        services[key] = other.string(key, pattern=_DIAL, expected="a dialable number")

    p = root.table("prompts", required=False)
    prompts: dict[str, str] = {}
    for key in p.data:
        if not re.fullmatch(r"[a-z0-9_]+", key):
            raise ConfigError(file, f"prompts.{key}", "a prompt name of a-z, 0-9 and _", key)
        prompts[key] = p.string(key, pattern=r"[a-z0-9_\-]+", expected="a sound name")

    w = root.table("web", required=False)
    w.unknown_keys({"bind", "port", "aml_gateways", "aml_require_hmac", "max_body_bytes",
                    "metrics_loopback_open", "tls_cert", "tls_key", "public_url", "health_port"})
    gateways = w.get("aml_gateways", list, "a list of gateway names", ["smsgw"])
    if not all(isinstance(g, str) and re.fullmatch(r"[a-z][a-z0-9_\-]{1,30}", g) for g in gateways):
        raise ConfigError(file, "web.aml_gateways", "a list of lower-case gateway names", gateways)
    web = WebSettings(
        bind=os.environ.get("SIAGA112_WEB_BIND") or w.string(
            "bind", "127.0.0.1", r"[0-9.]+|\[[0-9a-fA-F:]+\]", "an IP address"),
        port=_env_int("SIAGA112_WEB_PORT", w.integer("port", 1, 65535, 8112), file),
        aml_gateways=tuple(gateways),
        aml_require_hmac=w.get("aml_require_hmac", bool, "true or false", False),
        max_body_bytes=w.integer("max_body_bytes", 1024, 1048576, 16384),
        metrics_loopback_open=w.get("metrics_loopback_open", bool, "true or false", True),
        tls_cert=w.string("tls_cert", None),
        tls_key=w.string("tls_key", None),
        public_url=os.environ.get("SIAGA112_PUBLIC_URL") or w.string(
            "public_url", None, r"https://[A-Za-z0-9.\-\[\]:]+(:[0-9]{1,5})?(/[^\s]*)?",
            "an https:// URL such as https://112.jeparakab.go.id"),
        health_port=_health_port(w, file),
    )
    if (web.tls_cert is None) != (web.tls_key is None):
        raise ConfigError(file, "web.tls_key" if web.tls_key is None else "web.tls_cert",
                          "both tls_cert and tls_key, or neither (a self-signed pair is made)",
                          missing=True)

    sc = root.table("screening", required=False)
    sc.unknown_keys({"threshold", "window_h", "priority_penalty", "budget_ms", "allowlist"})
    allow = sc.get("allowlist", list, "a list of phone numbers", [])
    if not all(isinstance(n, str) and re.fullmatch(r"\+?[0-9]{3,16}", n) for n in allow):
        raise ConfigError(file, "screening.allowlist", "a list of phone numbers", allow)
    screening = Screening(
        threshold=sc.integer("threshold", 1, 100, 3),
        window_h=sc.number("window_h", 1, 24 * 30, 24.0),
        priority_penalty=sc.integer("priority_penalty", 0, 8, 3),
        budget_ms=sc.integer("budget_ms", 50, 5000, 400),
        allowlist=tuple(allow),
    )

    rt = root.table("retention", required=False)
    rt.unknown_keys({"recordings_days", "personal_days", "run_every_h", "cel_days"})
    retention = Retention(recordings_days=rt.integer("recordings_days", 1, 36500, 365),
                          personal_days=rt.integer("personal_days", 1, 36500, 730),
                          cel_days=rt.integer("cel_days", 1, 36500, 30),
                          run_every_h=rt.number("run_every_h", 0.1, 24 * 7, 24.0))
    c = root.table("console", required=False)
    c.unknown_keys({"wrap_up_s", "tile_url", "tile_attribution", "incident_radius_m",
                    "incident_window_min"})
    console = ConsoleSettings(
        wrap_up_s=c.number("wrap_up_s", 0, 3600, 0.0),
        tile_url=c.string("tile_url", OSM_TILES, r"https?://\S*\{z\}\S*\{x\}\S*\{y\}\S*",
                          "an http(s) tile URL with {z}, {x} and {y}"),
        tile_attribution=c.string("tile_attribution", OSM_ATTRIBUTION),
        incident_radius_m=c.number("incident_radius_m", 10, 100000, 1000.0),
        incident_window_min=c.number("incident_window_min", 1, 24 * 60, 60.0),
    )

    return Site(
        file=file,
        web=web,
        retention=retention,
        console=console,
        screening=screening,
        smtp=_parse_smtp(root) if "smtp" in data else None,
        edge=_parse_edge(root) if "edge" in data else None,
        code=s.string("code", pattern=r"[a-z][a-z0-9_]{1,30}", expected="a lower-case site code"),
        name=s.string("name"),
        reference_prefix=s.string("reference_prefix", pattern=r"[A-Z]{2,5}",
                                  expected="2-5 capital letters"),
        stasis_app=s.string("stasis_app", pattern=r"[A-Za-z0-9_\-]{1,60}",
                            expected="a Stasis app name (letters, digits, _ and -)"),
        timezone=tz,
        languages=tuple(languages),
        numbers=tuple(numbers),
        hours=hours,
        out_of_hours=OutOfHours(policy, forward),
        menu=menu,
        queue=queue,
        asterisk=ast,
        other_services=services,
        prompts=prompts,
        non_emergency_channel=s.string("non_emergency_channel", None),
        extra=root.get("extra", dict, "a table", {}),
    )


def _parse_edge(root: _Reader) -> EdgeConfig:
    e = root.table("edge")
    e.unknown_keys({"listen", "nodes", "ping_interval_s"})
    listen = e.string("listen", pattern=_HOSTPORT, expected="IPv4 host:port, e.g. 10.0.0.10:5060")
    raw = e.get("nodes", list, "a list of {name, address} tables")
    nodes: list[tuple[str, str]] = []
    for i, item in enumerate(raw):
        n = _Reader(e.file, item if isinstance(item, dict) else {}, f"{e.prefix}nodes[{i}].")
        if not isinstance(item, dict):
            raise ConfigError(e.file, f"{e.prefix}nodes[{i}]", "a table {name, address}", item)
        n.unknown_keys({"name", "address"})
        nodes.append((n.string("name", pattern=r"[a-z][a-z0-9_-]{0,30}", expected="a node name"),
                      n.string("address", pattern=_HOSTPORT, expected="IPv4 host:port")))
    if not nodes:
        raise ConfigError(e.file, f"{e.prefix}nodes", "at least one node", "none")
    addresses = [a for _, a in nodes]
    twice = sorted({x for x in addresses if addresses.count(x) > 1}
                   | {n for n, _ in nodes if [m for m, _ in nodes].count(n) > 1})
    if twice:
        raise ConfigError(e.file, f"{e.prefix}nodes", "distinct names and addresses",
                          f"{', '.join(twice)} more than once")
    return EdgeConfig(listen, tuple(nodes), e.integer("ping_interval_s", 1, 60, 2))


def _parse_smtp(root: _Reader) -> SmtpSettings:
    m = root.table("smtp")
    m.unknown_keys({"host", "port", "from", "starttls", "username", "timeout_s"})
    host = m.string("host", pattern=_HOST, expected="a mail server host name or IP")
    starttls = m.get("starttls", bool, "true or false", True)
    username = m.string("username", None, r"[^\s]{1,255}", "a user name without spaces")
    from_address = m.string("from", expected="an e-mail address like 112@jeparakab.go.id")
    if not is_email_address(from_address):
        raise ConfigError(root.file, "smtp.from", "an e-mail address like 112@jeparakab.go.id",
                          from_address)
    if username and not starttls and host not in ("127.0.0.1", "localhost", "[::1]"):
        # the password would cross the network in clear text
        raise ConfigError(root.file, "smtp.starttls", "true when a username is set for a remote "
                          "server", starttls)
    return SmtpSettings(host=host, port=m.integer("port", 1, 65535, 587), from_address=from_address,
                        starttls=starttls, username=username,
                        timeout_s=m.number("timeout_s", 1, 120, 20.0))


def load_site(path_or_code: str | Path) -> Site:
    """Load a site by file path or by code (``jepara`` → config/sites/jepara.toml)."""
    path = Path(path_or_code)
    if path.suffix != ".toml" and not path.exists():
        path = SITES_DIR / f"{path_or_code}.toml"
    shown = _display(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(shown, "(file)", "an existing site file", str(path)) from None
    except OSError as exc:
        raise ConfigError(shown, "(file)", "a readable file", exc.strerror) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise ConfigError(shown, "(file)", "UTF-8 text", "undecodable bytes") from None
    except (tomllib.TOMLDecodeError, ValueError, RecursionError) as exc:
        # tomllib raises plain ValueError for huge integers, RecursionError for deep nesting.
        raise ConfigError(shown, "(syntax)", "valid TOML", str(exc)[:200]) from None
    return parse_site(shown, data)


def _display(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def default_site_code() -> str:
    return os.environ.get("SIAGA112_SITE", "jepara")
