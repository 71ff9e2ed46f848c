"""`siaga112 aml parse`: a gateway engineer checks a payload by hand."""

from __future__ import annotations

import json
import subprocess
import sys

VECTOR = ('A"ML=1;lt=+54.76397;lg=-0.18305;rd=50;top=20130717141935;lc=90;pm=W;'
          "si=123456789012345;ei=1234567890123456;mcc=234;mnc=30;ml=128")


def run(stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ari_app.cli", "aml", "parse"], input=stdin,
                          capture_output=True, text=True, timeout=60, check=False)


def test_aml_parse_prints_fields_as_json() -> None:
    out = run(VECTOR)
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert (data["latitude"], data["longitude"], data["method"]) == (54.76397, -0.18305, "WiFi")
    assert data["fix_time"] == "2013-07-17T14:19:35+00:00"


def test_aml_parse_rejection_gives_reason_and_exit_code_1() -> None:
    out = run(VECTOR.replace("pm=W", "pm=Z"))
    assert out.returncode == 1
    assert out.stderr.startswith("rejected: ") and "'Z'" in out.stderr
