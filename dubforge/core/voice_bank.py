"""A show-level voice bank: `voices.yaml` maps each character to a voice per language, so a character keeps
the same voice in every episode.

    ANA:
      es: {backend: espeak, name: es, rate: 1.05}
      de: {backend: espeak, name: de}
    Ben:
      es: {backend: kokoro, name: jm_kumo}

Keys are speaker labels as scripts and review sheets write them. Found at the manifest's `voice_bank` path
(relative to the manifest; it may sit in the show's folder above), else `voices.yaml` beside the manifest.
A target's own `voices:` entry for a speaker wins over the bank.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import TypeAdapter, ValidationError

from dubforge.core.errors import InputError, Problem
from dubforge.core.languages import LanguageError, base_language, normalise_language
from dubforge.core.manifest import Manifest, Voice

DEFAULT_NAME = "voices.yaml"
_BANK = TypeAdapter(dict[str, dict[str, Voice]])


def bank_path(manifest: Manifest) -> Path | None:
    """The voice bank in use: the manifest's `voice_bank`, else voices.yaml beside it, else None."""
    if manifest.voice_bank is not None:
        return (manifest.root / manifest.voice_bank).resolve()
    default = manifest.root / DEFAULT_NAME
    return default if default.is_file() else None


def read_voice_bank(path: Path) -> dict[str, dict[str, Voice]]:
    """character -> {language: Voice}; every problem named with its file and key."""
    file = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(Problem(file, "", "voice bank not found (manifest key voice_bank)")) from None
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise InputError(Problem(file, "", f"not a valid YAML voice bank: {exc}")) from None
    try:
        bank = _BANK.validate_python(data or {})
    except ValidationError as exc:
        raise InputError([Problem(file, ".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()]) from None
    problems: list[Problem] = []
    normalised: dict[str, dict[str, Voice]] = {}
    for character, voices in bank.items():
        normalised[character] = {}
        for language, voice in voices.items():
            try:
                normalised[character][normalise_language(language)] = voice
            except LanguageError as exc:
                problems.append(Problem(file, f"{character}.{language}", str(exc)))
    if problems:
        raise InputError(problems)
    return normalised


def bank_voices(bank: dict[str, dict[str, Voice]], language: str) -> dict[str, Voice]:
    """speaker -> voice for `language` (an exact code first, then the base language: es-MX falls back to es)."""
    chosen = {}
    for character, voices in bank.items():
        voice = voices.get(language) or voices.get(base_language(language))
        if voice is not None:
            chosen[character] = voice
    return chosen
