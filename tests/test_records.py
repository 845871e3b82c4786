"""Line records of a long source stay small in memory, keep their JSON format and read caches written before."""

from __future__ import annotations

import io
import pickle
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from dubforge.core import contracts
from dubforge.core.contracts import DubTrack, FittedLine, Phoneme, Word
from dubforge.media import loudness

HOUR_PHONEMES = 45_000  # an hour of dubbed dialogue (benchmarks/long_source.py: 1080 lines)


def _line(i: int) -> FittedLine:
    return FittedLine(index=i, window_start=i * 3.3, window_end=i * 3.3 + 3, start=i * 3.3, end=i * 3.3 + 2.5,
                      natural_duration=2.5, rate=1.0, stretch=1.0, speed=1.0, borrowed=0.0, overflow=0.0,
                      text=f"Hola, esta es la línea {i}.")


def _dub(lines: int, phonemes: int) -> DubTrack:
    symbols = ["a", "e", "o", "s", "ɾ", "ð", "β"]
    return DubTrack(language="es", wav=Path("dub.es.wav"), sample_rate=48_000, lines=tuple(_line(i) for i in range(lines)),
                    phonemes=tuple(Phoneme(symbol=symbols[k % 7], start=k * 0.08 + 0.01, end=k * 0.08 + 0.07)
                                   for k in range(phonemes)), backend="espeak")


def test_record_json_is_unchanged():
    word = Word(text="hi", start=0.5, end=0.75, phonemes=(Phoneme(symbol="HH", start=0.5, end=0.6),
                                                           Phoneme(symbol="AY", start=0.6, end=0.75)))
    text = '{"text":"hi","start":0.5,"end":0.75,"phonemes":[{"symbol":"HH","start":0.5,"end":0.6},' \
           '{"symbol":"AY","start":0.6,"end":0.75}]}'
    assert word.model_dump_json() == text
    assert Word.model_validate_json(text) == word
    assert word.model_dump()["phonemes"][0] == {"symbol": "HH", "start": 0.5, "end": 0.6}
    with pytest.raises(ValidationError):  # as before: a record with an unknown key is refused
        Word.model_validate_json(text.replace('"symbol":"HH"', '"symbol":"HH","stress":1'))
    with pytest.raises(ValidationError):
        Word.model_validate_json(text.replace('"start":0.5,"end":0.6', '"start":"soon","end":0.6'))


def test_caches_pickled_with_the_pydantic_phoneme_still_load(monkeypatch):
    class OldPhoneme(BaseModel):  # Phoneme as it was (the flow's cache holds pickles of records)
        model_config = ConfigDict(frozen=True, extra="forbid")
        symbol: str
        start: float
        end: float

    OldPhoneme.__qualname__ = OldPhoneme.__name__ = "Phoneme"
    OldPhoneme.__module__ = contracts.__name__
    monkeypatch.setattr(contracts, "Phoneme", OldPhoneme)
    blob = pickle.dumps([OldPhoneme(symbol="m", start=1.0, end=1.25)])
    monkeypatch.undo()
    (loaded,) = pickle.load(io.BytesIO(blob))
    assert type(loaded) is Phoneme and loaded == Phoneme(symbol="m", start=1.0, end=1.25)
    assert pickle.loads(pickle.dumps(loaded)) == loaded


def test_an_hour_of_dub_records_is_small():
    text = _dub(1080, HOUR_PHONEMES).model_dump_json()
    tracemalloc.start()
    try:
        dub = DubTrack.model_validate_json(text)
        held = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(dub.phonemes) == HOUR_PHONEMES and dub.model_dump_json() == text
    # 28.5 MB when Phoneme was a pydantic model (about 600 bytes each), 9.4 MB now
    assert held < 12e6, f"{held / 1e6:.1f} MB held by an hour's dub track"


def test_loudness_meter_memory_does_not_grow_per_block():
    rate = 8_000  # the meter's bookkeeping is per 100 ms gating step, whatever the rate
    rng = np.random.default_rng(5)
    block = rng.normal(0, 0.1, (10 * rate, 2))

    def held_after(minutes: int) -> tuple[int, float]:
        tracemalloc.start()
        try:
            meter = loudness.LoudnessMeter(rate, 2)
            for _ in range(minutes * 6):
                meter.add(block)
            held = tracemalloc.get_traced_memory()[0]
        finally:
            tracemalloc.stop()
        return held, meter.integrated()

    loudness.LoudnessMeter(rate, 2).add(block)  # imports scipy.signal
    short, level = held_after(2)
    long, long_level = held_after(20)  # 10 800 more gating blocks: as one small array each they held 1.4 MB more
    assert long - short < 500_000, f"{(long - short) / 1e3:.0f} kB more for 18 more minutes"
    assert long_level == pytest.approx(level, abs=0.05)


def test_work_folder_keys_are_unchanged():
    """The flow keys the lip-sync work folder on a dub's phonemes: the hash is the one the pydantic records gave."""
    from dubforge.core.files import fingerprint

    phonemes = tuple(Phoneme(symbol=s, start=i * 0.1, end=i * 0.1 + 0.05) for i, s in enumerate("abcdeð"))
    dub = DubTrack(language="es", wav=Path("/nonexistent/x.wav"), sample_rate=48_000, lines=(), phonemes=phonemes,
                   backend="e")
    assert (fingerprint("es", phonemes, {"x": 1}), fingerprint(dub)) == ("ee33610e301e784ee4b4", "c02e1c67505c047ada2c")
