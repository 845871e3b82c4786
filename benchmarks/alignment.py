"""Alignment error on English: espeak-words (Whisper word times + espeak phonemes) against pocketsphinx.

    .venv/bin/python benchmarks/alignment.py

English sentences (not used to tune anything) are spoken by the bundled Piper voice, whose phoneme sample
counts give the true time of every word and phoneme. Both aligners get the same segments (the text, with
windows 0.3 s around each sentence, as a script would give) and then Whisper base's own segments (as ASR
gives). Printed: mean / 95th-percentile absolute error of word starts and ends against the truth, the share
of boundaries within 50 ms, and the mean error of phoneme boundaries inside words (Piper's IPA and the
aligner's phones are counted by position: a word with a different number of phones is left out there).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DO_NOT_TRACK", "1")

SENTENCES = [
    "The committee postponed its decision until the next meeting in October.",
    "The children need warm blankets and some water tonight.",
    "Honestly, I never expected the old bridge to survive the flood.",
    "Our neighbours grow tomatoes, peppers and beans behind the garage.",
    "Please send the signed contract to the office before Friday afternoon.",
]


def main() -> None:
    from dubforge.core.contracts import Segment, Transcript
    from dubforge.tasks.transcribe import align, transcribe
    from tests.media import speak_english

    work = Path(tempfile.mkdtemp(prefix="dubforge-align-bench-"))
    spoken = speak_english(" ".join(SENTENCES), work / "english.wav", lead=0.6, tail=0.6, gap=0.6)
    truth, i, segments = spoken.words, 0, []
    for sentence in SENTENCES:
        n = len(sentence.split())
        words = truth[i:i + n]
        i += n
        segments.append(Segment(start=words[0].start - 0.3, end=words[-1].end + 0.3, text=sentence))
    script = Transcript(language="en", segments=tuple(segments), backend="script")
    asr = transcribe(spoken.path, "en")
    print(f"{len(truth)} words, {spoken.duration:.1f} s of Piper speech; Whisper base heard {sum(len(s.words) for s in asr.segments)} words")
    print("\n| input | aligner | word start mean / p95 ms | word end mean / p95 ms | within 50 ms | phone boundary mean ms | seconds |")
    print("|---|---|---|---|---|---|---|")
    for label, transcript in (("script", script), ("ASR segments", asr)):
        results = {}
        for backend in ("pocketsphinx", "espeak-words"):
            began = time.perf_counter()
            aligned = align(spoken.path, transcript, backend)
            seconds = time.perf_counter() - began
            words = [w for s in aligned.segments for w in s.words]
            results[backend] = words
            if len(words) != len(truth):
                print(f"| {label} | {backend} | {len(words)} words for {len(truth)}: not comparable | | | | {seconds:.2f} |")
                continue
            starts = np.array([abs(a.start - b.start) for a, b in zip(words, truth)]) * 1000
            ends = np.array([abs(a.end - b.end) for a, b in zip(words, truth)]) * 1000
            phone_err = [abs(p.start - q[1]) * 1000 for a, b in zip(words, truth) if len(a.phonemes) == len(b.phonemes)
                         for p, q in list(zip(a.phonemes, b.phonemes))[1:]]
            within = float(np.mean(np.concatenate([starts, ends]) <= 50))
            print(f"| {label} | {backend} | {starts.mean():.0f} / {np.percentile(starts, 95):.0f} | "
                  f"{ends.mean():.0f} / {np.percentile(ends, 95):.0f} | {within:.0%} | "
                  f"{np.mean(phone_err) if phone_err else float('nan'):.0f} ({len(phone_err)}) | {seconds:.2f} |")
        a, b = results["pocketsphinx"], results["espeak-words"]
        if len(a) == len(b):
            gap = np.array([abs(x.start - y.start) for x, y in zip(a, b)] + [abs(x.end - y.end) for x, y in zip(a, b)])
            print(f"| {label} | espeak-words vs pocketsphinx | mean {gap.mean() * 1000:.0f} ms, p95 "
                  f"{np.percentile(gap, 95) * 1000:.0f} ms | | | | |")


if __name__ == "__main__":
    main()
