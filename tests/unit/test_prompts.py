"""`siaga112 prompts build`: espeak-ng + sox, 8 kHz mono; a recorded file wins over the voice."""

from __future__ import annotations

import subprocess
import wave
from pathlib import Path

import pytest

from ari_app.config import ConfigError
from ari_app.prompts import build, load_prompts


def _duration(path: Path) -> float:
    with wave.open(str(path)) as w:
        assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
        return float(w.getnframes()) / 8000


def test_recorded_file_replaces_the_generated_prompt_and_rebuild_is_skipped(
    tmp_path: Path,
) -> None:
    prompts = tmp_path / "prompts"
    (prompts / "recorded" / "id").mkdir(parents=True)
    (prompts / "site.toml").write_text(
        '[hello]\nid = "Halo."\nen = "Hello."\n')
    recorded = prompts / "recorded" / "id" / "hello.wav"
    # A real centre's studio recording: 3 s at 44.1 kHz stereo, converted by the build.
    subprocess.run(["sox", "-n", "-r", "44100", "-c", "2", str(recorded), "synth", "3",
                    "sine", "440"], check=True)
    sounds = tmp_path / "sounds"
    written = build(sounds, prompts)
    assert written == 3  # id (recorded), en (espeak-ng), music on hold
    assert _duration(sounds / "id" / "hello.wav") == pytest.approx(3.0, abs=0.01)
    assert 0.2 < _duration(sounds / "en" / "hello.wav") < 3.0  # spoken "Hello."
    assert build(sounds, prompts) == 0  # nothing changed: nothing rebuilt


def test_prompt_in_an_unknown_language_is_named_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "bad.toml").write_text('[hello]\nfr = "Bonjour."\n')
    with pytest.raises(ConfigError) as err:
        load_prompts(tmp_path)
    assert "hello.fr: expected a language of id, en" in str(err.value)
