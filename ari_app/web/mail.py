"""Agency notifications by e-mail: the plain-text message and one SMTP send (standard smtplib).

`send` blocks (smtplib), so the outbox runs it with asyncio.to_thread. It raises MailError with
`permanent=True` for a 5xx reply (retrying would get the same answer) and `permanent=False` for
anything worth retrying (4xx, connection refused, time-out, dropped connection).
"""

from __future__ import annotations

import smtplib
import ssl
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from ari_app.config import SmtpSettings


class MailError(Exception):
    def __init__(self, message: str, *, permanent: bool) -> None:
        super().__init__(message)
        self.permanent = permanent


def password_file(var_dir: Path, site_code: str) -> Path:
    return var_dir / "secrets" / f"smtp-{site_code}.password"


def read_password(var_dir: Path, site_code: str) -> str:
    """The SMTP password set with `siaga112 smtp password` (read at each send: no restart needed)."""
    path = password_file(var_dir, site_code)
    try:
        value = path.read_text().rstrip("\n")
    except FileNotFoundError:
        value = ""
    if not value:
        raise MailError(f"smtp.username is set but {path} is empty or missing "
                        "(siaga112 smtp password)", permanent=False)
    return value


def _local(iso: str | None, tz: ZoneInfo) -> str:
    if not iso:
        return "-"
    return datetime.fromisoformat(iso).astimezone(tz).strftime("%Y-%m-%d %H:%M:%S %Z")


def _location(payload: dict[str, Any], tz: ZoneInfo) -> str:
    for loc in payload["ticket"]["locations"]:
        if loc["latitude"] is None or loc["longitude"] is None:
            continue
        radius = f" ±{loc['radius_m']:.0f} m" if loc["radius_m"] is not None else ""
        return (f"{loc['latitude']:.5f}, {loc['longitude']:.5f}{radius} "
                f"({loc['source']}, {_local(loc['received_at'], tz)}) "
                f"https://www.openstreetmap.org/?mlat={loc['latitude']:.5f}"
                f"&mlon={loc['longitude']:.5f}#map=16/{loc['latitude']:.5f}/{loc['longitude']:.5f}")
    return "belum diketahui / not known yet"


def _incident_lines(payload: dict[str, Any], tz: ZoneInfo) -> list[str]:
    """Tickets linked into one incident: this one notification lists them all."""
    incident = payload.get("incident")
    if not incident:
        return []
    return ["", f"Insiden / Incident {incident['reference']}: "
                f"{len(incident['tickets'])} tiket / tickets"] + [
        f"  {m['reference']}  {_local(m['arrived_at'], tz)}  {m['category']}  {m['caller_number'] or '-'}"
        for m in incident["tickets"]]


def body_text(payload: dict[str, Any], agency_name: str, site_name: str, tz: ZoneInfo) -> str:
    """Bahasa Indonesia first, English second, on each line, as the prompts are."""
    t = payload["ticket"]
    lines = [
        f"{site_name}: tiket 112 untuk / 112 ticket for {agency_name}",
        "",
        f"Nomor tiket / Reference:        {t['reference']}",
        f"Kategori / Category:            {t['category']}",
        f"Prioritas / Priority:           {t['priority']} (1 = paling mendesak / most urgent)",
        f"Jenis / Kind:                   {t['kind']}",
        f"Penelepon diam / Silent caller: {'ya / yes' if t['silent'] else 'tidak / no'}",
        f"Nomor penelepon / Caller:       {t['caller_number'] or '-'}",
        f"Lokasi penelepon / Location:    {_location(payload, tz)}",
        f"Waktu panggilan / Call time:    {_local(t['arrived_at'], tz)}",
        f"Diteruskan / Dispatched:        {_local(payload['dispatched_at'], tz)}"
        f" ({payload['dispatched_by'] or '-'})",
        f"Catatan / Notes:                {t['notes'] or '-'}",
        *_incident_lines(payload, tz),
        "",
        "Terima dan selesaikan tiket ini lewat tautan berikut (berlaku 7 hari):",
        "Acknowledge and resolve this ticket with this link (valid for 7 days):",
        f"  {payload['ack_url']}",
        "API (POST JSON {\"action\": \"acknowledge\" | \"resolve\", \"evidence\": \"...\"}):",
        f"  {payload['ack_api']}",
        "",
        f"ID notifikasi / Notification id: {payload['notification_id']}",
        "Pesan otomatis, jangan dibalas / Automatic message, do not reply.",
    ]
    return "\n".join(lines) + "\n"


def build_message(settings: SmtpSettings, to: str, payload: dict[str, Any], *, agency_name: str,
                  site_code: str, site_name: str, tz: ZoneInfo, now: datetime,
                  attempt: int) -> EmailMessage:
    t = payload["ticket"]
    msg = EmailMessage()
    msg["From"] = settings.from_address
    msg["To"] = to
    msg["Subject"] = (f"[112] {t['reference']} {t['category']} "
                      f"prioritas/priority {t['priority']}")
    msg["Date"] = format_datetime(now.astimezone(tz))
    # One id per notification: the agency's mail system can drop a resend after a crash.
    domain = settings.from_address.rpartition("@")[2]
    msg["Message-ID"] = f"<siaga112.{site_code}.{payload['notification_id']}@{domain}>"
    msg["X-Siaga-Notification-Id"] = str(payload["notification_id"])
    msg["X-Siaga-Attempt"] = str(attempt)
    msg["Auto-Submitted"] = "auto-generated"
    msg.set_content(body_text(payload, agency_name, site_name, tz), charset="utf-8")
    return msg


def _reply(code: int, text: bytes | str) -> str:
    raw = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
    return f"SMTP {code} {' '.join(raw.split())}"[:300]


def send(settings: SmtpSettings, message: EmailMessage, password: str | None) -> None:
    """Hand the message to the site's mail server; MailError says whether to try again."""
    try:
        with smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_s) as smtp:
            smtp.ehlo()
            if settings.starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if settings.username:
                smtp.login(settings.username, password or "")
            smtp.send_message(message)
    except smtplib.SMTPRecipientsRefused as exc:
        code, text = next(iter(exc.recipients.values()))
        raise MailError(_reply(code, text), permanent=code >= 500) from None
    except smtplib.SMTPResponseException as exc:  # sender refused, data refused, auth failed...
        raise MailError(_reply(exc.smtp_code, exc.smtp_error), permanent=exc.smtp_code >= 500) from None
    except smtplib.SMTPNotSupportedError as exc:  # e.g. STARTTLS asked of a server without it
        raise MailError(f"SMTP: {exc}"[:300], permanent=False) from None
    except (smtplib.SMTPException, OSError) as exc:  # refused, reset, time-out, TLS failure
        raise MailError(f"{type(exc).__name__}: {exc}"[:300], permanent=False) from None
