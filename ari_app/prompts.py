"""`siaga112 prompts build`: speak config/prompts/*.toml with espeak-ng, convert with sox.

Output: var/sounds/<lang>/<name>.wav, 8 kHz mono 16-bit. A recorded file at
config/prompts/recorded/<lang>/<name>.wav replaces the generated one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import tempfile
import tomllib
from pathlib import Path

from ari_app.config import PROJECT_ROOT, ConfigError

log = logging.getLogger(__name__)

PROMPTS_DIR = PROJECT_ROOT / "config" / "prompts"
VOICES = {"id": "id", "en": "en"}


def load_prompts(directory: Path = PROMPTS_DIR) -> dict[str, dict[str, str]]:
    prompts: dict[str, dict[str, str]] = {}
    for path in sorted(directory.glob("*.toml")):
        shown = str(path.relative_to(PROJECT_ROOT)) if path.is_relative_to(PROJECT_ROOT) else str(path)
        try:
            data = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(shown, "(syntax)", "valid TOML", str(exc)) from None
        for name, texts in data.items():
            if not isinstance(texts, dict):
                raise ConfigError(shown, name, "a table of language = text", texts)
            if name in prompts:
                raise ConfigError(shown, name, "a prompt name defined once", name)
            for lang, text in texts.items():
                if lang not in VOICES:
                    raise ConfigError(shown, f"{name}.{lang}", "a language of " + ", ".join(VOICES),
                                      lang)
                if not isinstance(text, str) or not text.strip():
                    raise ConfigError(shown, f"{name}.{lang}", "non-empty text", text)
            prompts[name] = dict(texts)
    return prompts


def build(sounds_dir: Path, directory: Path = PROMPTS_DIR, force: bool = False) -> int:
    """Build every prompt that changed; returns how many files were written."""
    prompts = load_prompts(directory)
    manifest_path = sounds_dir / "manifest.json"
    try:
        manifest: dict[str, str] = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        manifest = {}
    written = 0
    for name, texts in prompts.items():
        for lang, text in texts.items():
            out = sounds_dir / lang / f"{name}.wav"
            recorded = directory / "recorded" / lang / f"{name}.wav"
            source = f"recorded:{recorded.stat().st_mtime}" if recorded.exists() else f"tts:{text}"
            key = f"{lang}/{name}"
            digest = hashlib.sha256(source.encode()).hexdigest()
            if not force and out.exists() and manifest.get(key) == digest:
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            if recorded.exists():
                _sox(recorded, out)
            else:
                _speak(text, VOICES[lang], out)
            manifest[key] = digest
            written += 1
    moh = sounds_dir / "moh" / "calm.wav"
    if force or not moh.exists():
        moh.parent.mkdir(parents=True, exist_ok=True)
        # A soft, low tone: the caller knows the line is alive while waiting.
        subprocess.run(["sox", "-n", "-r", "8000", "-c", "1", "-b", "16", str(moh),
                        "synth", "2", "sine", "330", "vol", "0.05", "pad", "0", "2"], check=True)
        written += 1
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    manifest_path.write_text(json.dumps(manifest, indent=1, sort_keys=True))
    log.info("prompts: %d file(s) written under %s", written, sounds_dir)
    return written


def _speak(text: str, voice: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "tts.wav"
        subprocess.run(["espeak-ng", "-v", voice, "-s", "185", "-w", str(raw), text],
                       check=True, capture_output=True)
        _sox(raw, out)


def _sox(src: Path, out: Path) -> None:
    subprocess.run(["sox", str(src), "-r", "8000", "-c", "1", "-b", "16", "-e", "signed-integer",
                    str(out)], check=True, capture_output=True)
