"""Intonation kept across the dub: pitch contour of twelve expressive lines, source vs dubbed, measured with Praat.

    .venv/bin/python benchmarks/intonation.py [--language es]

Twelve English lines (questions, exclamations, apologies; not used to tune anything) are spoken by the bundled
Piper voice (the source) and their translations by each candidate voice (espeak-ng; Kokoro jm_kumo). Praat
(parselmouth, autocorrelation pitch 75-500 Hz) tracks F0; each line's voiced F0 in semitones is resampled to 50
points over its voiced span. Printed per voice: the median Pearson correlation of the dub's contour with the
source's, and the median ratio of their ranges (5th-95th percentile, semitones).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DO_NOT_TRACK", "1")

LINES = [
    ("Are you coming with us tonight?", "¿Vienes con nosotros esta noche?"),
    ("I can't believe we actually won!", "¡No puedo creer que de verdad ganamos!"),
    ("I'm so sorry, I didn't mean to hurt you.", "Lo siento mucho, no quería hacerte daño."),
    ("Where did you put my keys?", "¿Dónde pusiste mis llaves?"),
    ("That was the best concert ever!", "¡Fue el mejor concierto de todos!"),
    ("Please forgive me, it was my fault.", "Por favor, perdóname, fue culpa mía."),
    ("Do you really think she will call?", "¿De verdad crees que ella va a llamar?"),
    ("Watch out, the car is coming!", "¡Cuidado, viene el coche!"),
    ("I apologise for the long delay.", "Pido disculpas por el largo retraso."),
    ("Why didn't you tell me sooner?", "¿Por qué no me lo dijiste antes?"),
    ("What a wonderful surprise!", "¡Qué sorpresa tan maravillosa!"),
    ("Excuse me, could you help me, please?", "Disculpe, ¿me podría ayudar, por favor?"),
]
POINTS = 50


def contour(path: Path) -> np.ndarray | None:
    import parselmouth

    pitch = parselmouth.Sound(str(path)).to_pitch(pitch_floor=75, pitch_ceiling=500)
    f0 = pitch.selected_array["frequency"]
    voiced = np.flatnonzero(f0 > 0)
    if len(voiced) < 5:
        return None
    span = np.arange(voiced[0], voiced[-1] + 1)
    semitones = np.interp(span, voiced, 12 * np.log2(f0[voiced] / 100.0))
    return np.interp(np.linspace(0, len(span) - 1, POINTS), np.arange(len(span)), semitones)


def spread(values: np.ndarray) -> float:
    return float(np.percentile(values, 95) - np.percentile(values, 5))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--language", default="es")
    args = parser.parse_args()

    from dubforge.models.base import create_synthesizer

    work = Path(tempfile.mkdtemp(prefix="dubforge-intonation-"))
    source = create_synthesizer("piper", language="en")
    voices = {"espeak": create_synthesizer("espeak", language=args.language),
              "kokoro jm_kumo": create_synthesizer("kokoro", language=args.language)}
    sources = [contour(source.synthesize(en, work / f"src{i}.wav").wav) for i, (en, _) in enumerate(LINES)]
    print("| voice | median correlation | median range ratio | lines measured |")
    print("|---|---|---|---|")
    for label, voice in voices.items():
        correlations, ratios = [], []
        for i, (_, translated) in enumerate(LINES):
            dub = contour(voice.synthesize(translated, work / f"{label.split()[0]}{i}.wav").wav)
            if dub is None or sources[i] is None:
                continue
            correlations.append(float(np.corrcoef(sources[i], dub)[0, 1]))
            ratios.append(spread(dub) / max(spread(sources[i]), 1e-6))
        print(f"| {label} | {statistics.median(correlations):.2f} | {statistics.median(ratios):.2f} | "
              f"{len(correlations)}/{len(LINES)} |")


if __name__ == "__main__":
    main()
