"""Incidents: the distance that makes tickets neighbours, and the one e-mail listing them all."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from ari_app.web.incidents import distance_m
from ari_app.web.mail import body_text


def test_distance_between_two_points_in_jepara_is_in_metres() -> None:
    assert round(distance_m((-6.58870, 110.66840), (-6.59100, 110.66900))) in range(255, 275)
    assert distance_m((-6.5887, 110.6684), (-6.5887, 110.6684)) == 0.0
    assert 4700 < distance_m((-6.58870, 110.66840), (-6.63400, 110.66840)) < 5100


def test_the_agency_email_of_an_incident_lists_every_ticket_in_it() -> None:
    ticket = {"reference": "JPR-20250519-0011", "category": "fire", "priority": 1,
              "kind": "emergency", "silent": False, "caller_number": "081200000011",
              "locations": [], "arrived_at": "2025-05-19T03:00:00+00:00", "notes": ""}
    payload = {"ticket": ticket, "dispatched_at": "2025-05-19T03:05:00+00:00",
               "dispatched_by": "sari", "ack_url": "http://x/ack/t", "ack_api": "http://x/api/v1/ack/t",
               "notification_id": 7,
               "incident": {"reference": "INC-3", "tickets": [
                   {"reference": "JPR-20250519-0011", "arrived_at": "2025-05-19T03:00:00+00:00",
                    "category": "fire", "caller_number": "081200000011"},
                   {"reference": "JPR-20250519-0012", "arrived_at": "2025-05-19T03:10:00+00:00",
                    "category": "fire", "caller_number": "081200000012"}]}}
    text = body_text(payload, "Damkar", "Jepara Tanggap 112", ZoneInfo("Asia/Jakarta"))
    assert "Insiden / Incident INC-3: 2 tiket / tickets" in text
    assert "JPR-20250519-0012  2025-05-19 10:10" in text
    assert "Insiden" not in body_text({**payload, "incident": None}, "Damkar", "J",
                                      ZoneInfo("Asia/Jakarta"))
