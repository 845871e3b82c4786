"""espeak-ng formant TTS for every language it ships (libespeak-ng 1.52 from `espeakng-loader`, via ctypes).

Phoneme timings come from the C API's phoneme events (IPA symbol + audio position in ms).
The library is process-global state with statics that survive espeak_Terminate: one lock guards it, and
each synthesis runs on a freshly loaded private copy so equal inputs give byte-identical audio.
"""

from __future__ import annotations

import _ctypes
import atexit
import contextlib
import ctypes
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import numpy as np

from dubforge.core.contracts import Phoneme, Speech
from dubforge.core.files import fingerprint
from dubforge.core.languages import LanguageError, base_language, normalise_language
from dubforge.media.audio import write_wav
from dubforge.models.base import Synthesizer

DEFAULT_WPM = 175
MIN_WPM, MAX_WPM = 80, 900

# speak_lib.h constants
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INIT_PHONEME_EVENTS = 0x0001
_INIT_PHONEME_IPA = 0x0002
_INIT_DONT_EXIT = 0x8000
_EVENT_LIST_TERMINATED = 0
_EVENT_PHONEME = 7
_CHARS_UTF8 = 1
_POS_CHARACTER = 1
_PARAM_RATE = 1
_IPA_MODE = 0x02  # espeak_TextToPhonemes: IPA symbols
_TIE_IN_NAMES = 0x80  # ... with bits 8-23 as the tie inside multi-letter phonemes


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),
        ("length", ctypes.c_int),
        ("audio_position", ctypes.c_int),
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_STRESS = str.maketrans("", "", "ˈˌ")

_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))

_LOCK = threading.Lock()
_PRIVATE_LIB: Path | None = None
_INFO: tuple[int, str] | None = None  # (sample rate, version)


def _scan_voices(data_dir: Path) -> dict[str, str]:
    """Language name -> voice identifier from espeak-ng-data/lang/** ("language <name> [priority]" lines).

    Read from the voice files: espeak_ListVoices packs languages in a byte list that ctypes cannot bound.
    A lower priority number wins, as in espeak's own voice selection.
    """
    best: dict[str, tuple[int, str]] = {}
    lang_dir = data_dir / "lang"
    for path in sorted(p for p in lang_dir.rglob("*") if p.is_file()):
        identifier = path.relative_to(lang_dir).as_posix()
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[0] == "language":
                priority = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 5
                name = parts[1].lower()
                if name not in best or priority < best[name][0]:
                    best[name] = (priority, identifier)
    return {name: identifier for name, (_, identifier) in sorted(best.items())}


def _private_library() -> Path:
    """A per-process copy of libespeak-ng, so dlclose really unloads it (nothing else holds that path)."""
    global _PRIVATE_LIB
    if _PRIVATE_LIB is None:
        import espeakng_loader

        folder = Path(tempfile.mkdtemp(prefix="dubforge-espeak-"))
        atexit.register(shutil.rmtree, folder, True)
        _PRIVATE_LIB = Path(shutil.copy(espeakng_loader.get_library_path(), folder / "libespeak-ng.so"))
    return _PRIVATE_LIB


def _bind(lib: ctypes.CDLL) -> None:
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_CALLBACK]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_Synth.argtypes = [
        ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
        ctypes.POINTER(ctypes.c_uint), ctypes.c_void_p,
    ]
    lib.espeak_Synth.restype = ctypes.c_int
    lib.espeak_Synchronize.restype = ctypes.c_int
    lib.espeak_Terminate.restype = ctypes.c_int
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_TextToPhonemes.argtypes = [ctypes.POINTER(ctypes.c_char_p), ctypes.c_int, ctypes.c_int]
    lib.espeak_TextToPhonemes.restype = ctypes.c_char_p


@contextlib.contextmanager
def _fresh_engine(samples: list[np.ndarray], events: list[tuple[int, str]]) -> Iterator[ctypes.CDLL]:
    """Load, initialise, use and unload the library (call with _LOCK held).

    espeak keeps function-level statics (pitch flutter index, wave phase) across syntheses and even
    across espeak_Terminate, so a reused instance makes the same text sound slightly different each
    time. A fresh load per synthesis (~10 ms) is the only way to byte-identical output.
    """
    import espeakng_loader

    global _INFO
    lib = ctypes.CDLL(str(_private_library()))
    try:
        _bind(lib)
        data_dir = espeakng_loader.get_data_path()
        options = _INIT_PHONEME_EVENTS | _INIT_PHONEME_IPA | _INIT_DONT_EXIT
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_dir.encode(), options)
        if rate <= 0:
            raise RuntimeError(f"libespeak-ng failed to initialise with data at {data_dir}")
        _INFO = (rate, lib.espeak_Info(None).decode())

        def on_audio(wav, count, event_ptr) -> int:
            if count > 0:
                samples.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
            j = 0
            while event_ptr[j].type != _EVENT_LIST_TERMINATED:
                event = event_ptr[j]
                if event.type == _EVENT_PHONEME:
                    symbol = bytes(event.id.string).split(b"\0", 1)[0].decode("utf-8", "replace")
                    events.append((event.audio_position, symbol))
                j += 1
            return 0

        callback = _CALLBACK(on_audio)
        lib.espeak_SetSynthCallback(callback)
        try:
            yield lib
        finally:
            lib.espeak_Terminate()
    finally:
        handle = lib._handle
        del lib
        _ctypes.dlclose(handle)


@lru_cache(maxsize=1)
def _voices() -> dict[str, str]:
    import espeakng_loader

    return _scan_voices(Path(espeakng_loader.get_data_path()))


def _info() -> tuple[int, str]:
    """(sample rate, library version), from one load of the library."""
    with _LOCK:
        if _INFO is None:
            with _fresh_engine([], []):
                pass
        assert _INFO is not None
        return _INFO


def list_languages() -> dict[str, str]:
    """espeak language name -> voice identifier (e.g. 'pt-br' -> 'roa/pt-BR')."""
    return dict(_voices())


def resolve_voice(language: str, voices: dict[str, str]) -> str:
    """The espeak voice identifier for a BCP-47 tag: exact tag, then known aliases, then the base language."""

    try:
        tag = normalise_language(language)
    except LanguageError as error:
        raise ValueError(f"espeak: {error}") from None
    base = base_language(tag)
    aliases = {"zh": ["cmn"], "no": ["nb"]}  # macrolanguage tags espeak files under a member language
    candidates = list(dict.fromkeys([tag.lower(), *aliases.get(base, []), base]))
    for candidate in candidates:
        if candidate in voices:
            return voices[candidate]
    raise ValueError(
        f"espeak-ng has no voice for language {language!r} (tried {', '.join(candidates)}; "
        f"{len(voices)} languages available, e.g. es, de, fr, pt-br, cmn)"
    )


class EspeakSynthesizer(Synthesizer):
    """Formant TTS in ~130 languages with exact phoneme event times."""

    name = "espeak"

    def __init__(self, language: str, name: str | None = None, model: Path | None = None, rate: float = 1.0):
        if model is not None:
            raise ValueError("espeak: `model` is not used by this backend (choose a voice with `name`)")
        if rate <= 0:
            raise ValueError(f"espeak: rate must be positive, got {rate}")
        self.language = language
        self.base_rate = float(rate)
        self.voice = name or resolve_voice(language, _voices())
        if name is not None and name.lower() not in _voices() and name not in _voices().values():
            raise ValueError(f"espeak-ng has no voice named {name!r} (give a language such as 'pt-br' or 'roa/pt-BR')")
        self.sample_rate, self.version = _info()

    def fingerprint(self) -> str:
        return fingerprint("espeak", self.version, self.voice, self.base_rate, _kana_reader(self.language))

    def synthesize(self, text: str, out_wav: Path, rate: float = 1.0) -> Speech:
        if rate <= 0:
            raise ValueError(f"espeak: rate must be positive, got {rate}")
        text = _prepare_text(text, self.language)
        wpm = int(round(min(max(DEFAULT_WPM * self.base_rate * rate, MIN_WPM), MAX_WPM)))
        samples: list[np.ndarray] = []
        events: list[tuple[int, str]] = []
        with _LOCK, _fresh_engine(samples, events) as lib:
            if lib.espeak_SetVoiceByName(self.voice.encode()) != 0:
                raise RuntimeError(f"espeak-ng could not select voice {self.voice!r}")
            lib.espeak_SetParameter(_PARAM_RATE, wpm, 0)
            data = text.encode("utf-8") + b"\0"
            status = lib.espeak_Synth(data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
            lib.espeak_Synchronize()
            if status != 0:
                raise RuntimeError(f"espeak_Synth failed with status {status} for {text[:60]!r}")
        pcm = np.concatenate(samples) if samples else np.zeros(0, np.int16)
        audio = pcm.astype(np.float32) / 32768.0
        write_wav(Path(out_wav), audio[:, None], self.sample_rate)
        duration = len(audio) / self.sample_rate
        return Speech(wav=Path(out_wav), sample_rate=self.sample_rate, duration=duration,
                      phonemes=_phonemes(events, duration))


def text_to_ipa(texts: list[str], language: str, tie: str = "^") -> list[str]:
    """espeak-ng's IPA (with stress marks) for each text, in one load of the library.

    Multi-letter phonemes are joined by `tie` ('t^ʃ'); espeak splits a text into clauses at punctuation and
    drops it: the clauses of one text come back joined by spaces. Language-switch flags such as '(en)' are
    removed (the words stay, read by the other language's rules)."""
    voice = resolve_voice(language, _voices())
    mode = _IPA_MODE | _TIE_IN_NAMES | (ord(tie) << 8)
    out = []
    with _LOCK, _fresh_engine([], []) as lib:
        if lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"espeak-ng could not select voice {voice!r}")
        for text in texts:
            buffer = ctypes.c_char_p(_prepare_text(text, language).encode("utf-8") + b"\0")
            pointer = ctypes.pointer(buffer)
            clauses = []
            while pointer.contents.value:
                result = lib.espeak_TextToPhonemes(pointer, _CHARS_UTF8, mode)
                if result:
                    clauses.append(result.decode("utf-8", "replace"))
            out.append(re.sub(r"\([^)]*\)", "", " ".join(c.strip() for c in clauses if c.strip())))
    return out


def _kana_reader(language: str) -> str | None:
    """Version of the Japanese kana converter in use (it changes what espeak reads), None if unused."""
    if language.lower().split("-")[0] != "ja":
        return None

    for package in ("pyopenjtalk-plus", "pyopenjtalk"):
        try:
            return f"{package} {version(package)}"
        except PackageNotFoundError:
            continue
    return None


def _prepare_text(text: str, language: str) -> str:
    """Japanese: espeak reads kana far better than kanji; convert when pyopenjtalk is installed."""
    if language.lower().split("-")[0] != "ja":
        return text
    try:
        import pyopenjtalk
    except ImportError:
        return text
    return str(pyopenjtalk.g2p(text, kana=True))


def _phonemes(events: list[tuple[int, str]], duration: float) -> tuple[Phoneme, ...]:
    """Phoneme events (start ms, IPA) -> contiguous spans; pauses and empty symbols become '_'.

    Stress marks are dropped (Piper gives them as separate symbols; both backends report bare phones);
    language-switch markers such as '(en)' are not sounds and are skipped.
    """
    starts: list[tuple[float, str]] = []
    for ms, raw in events:
        if raw.startswith("("):
            continue
        symbol = raw.strip().translate(_STRESS) or "_"
        start = min(ms / 1000.0, duration)
        if starts and starts[-1][1] == "_" and symbol == "_":
            continue
        if starts and abs(starts[-1][0] - start) < 1e-9:
            starts[-1] = (start, symbol)  # zero-length event: the later one wins
            continue
        starts.append((start, symbol))
    if starts and starts[0][0] > 0:
        starts.insert(0, (0.0, "_"))
    out = []
    for i, (start, symbol) in enumerate(starts):
        end = starts[i + 1][0] if i + 1 < len(starts) else duration
        if end > start:
            out.append(Phoneme(symbol=symbol, start=round(start, 6), end=round(end, 6)))
    return tuple(out)
