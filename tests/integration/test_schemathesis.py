"""Schemathesis itself (from PyPI) against our OpenAPI document, in a short run: no 5xx and no
response that breaks the document (status, content type, schema). The Hypothesis property tests
in test_openapi_fuzz.py stay: they aim at inputs schemathesis does not send (NUL, surrogates).

The app runs in-process on a real database; schemathesis runs as its own process (its CLI).
Its fuzzing phase goes round after round until --max-time: 25 s keeps CI short (`make
fuzz-api` runs it longer)."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from pathlib import Path

import pytest

from ari_app.config import Site
from tests.integration.console_stack import web_stack

SCHEMATHESIS = shutil.which("schemathesis", path=str(Path(sys.executable).parent)) or "schemathesis"
CHECKS = ("not_a_server_error,status_code_conformance,content_type_conformance,"
          "response_schema_conformance")


async def test_schemathesis_finds_no_server_error_and_no_schema_violation(
        db_url: str, var_dir: Path, jepara: Site, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # the complaint limit (1/s per address) would answer most cases 429 and test nothing else
    monkeypatch.setenv("SIAGA112_COMPLAINTS_RATE_PER_S", "1000")
    monkeypatch.setenv("SIAGA112_COMPLAINTS_BURST", "1000")
    (var_dir / "secrets").mkdir(exist_ok=True)
    (var_dir / "secrets" / "whatsapp-app.secret").write_text("fuzz-app-secret\n")
    async with web_stack(db_url, var_dir, jepara) as stack:
        token = await stack.token("fuzzer", "admin")
        await stack.ticket("JPR-20261201-0001", channel_id="c1", caller_number="081234567890")
        proc = await asyncio.create_subprocess_exec(
            SCHEMATHESIS, "run", f"{stack.url}/api/v1/openapi.json", "--checks", CHECKS,
            "--max-examples", "5", "--seed", "112", "--phases", "examples,coverage,fuzzing",
            "--header", f"Authorization: Bearer {token}", "--request-timeout", "10",
            "--tls-verify", str(var_dir / "secrets" / "web-tls.crt"),  # the generated certificate
            "--max-time", os.environ.get("SIAGA112_SCHEMATHESIS_S", "25"), "--workers", "1", "--no-shrink",
            "--report", "junit,ndjson", "--report-dir", str(tmp_path / "report"),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=tmp_path)
        out, _ = await asyncio.wait_for(proc.communicate(), 300)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, text[-6000:]
    assert "No issues found" in text or " passed" in text, text[-3000:]
    assert (tmp_path / "report").is_dir()
