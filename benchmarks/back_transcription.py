"""Back-transcription QC: the whole delivered track heard at once (the former method, as baseline) against the dubbed
lines heard in groups (`dubforge.tasks.qc.back_transcribe`), on the deliverables of a pipeline run.

    .venv/bin/python benchmarks/back_transcription.py OUT [--languages es,de,pt-BR]

OUT is a `dubforge run` output folder (e.g. `benchmarks/pipeline.py --work DIR` leaves DIR/rep0/out). Per language:
CPU seconds of this process (user+sys, Whisper's threads included), Whisper encoder passes, median and mean CER
over the lines and the flagged lines, each method on the same delivered file with the same model (Whisper base,
int8, beam 1); then the grouped method again over the groups it kept (what a re-delivery of unchanged audio costs).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dubforge.core.contracts import FittedLine  # noqa: E402
from dubforge.core.textscore import error_rates  # noqa: E402
from dubforge.media.audio import SPEECH_RATE, decode_audio, resample, to_channels, write_wav  # noqa: E402
from dubforge.models.base import create_transcriber  # noqa: E402
from dubforge.tasks import qc  # noqa: E402


def cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def lines_of(qc_json: Path) -> tuple[FittedLine, ...]:
    report = json.loads(qc_json.read_text(encoding="utf-8"))
    return tuple(FittedLine(index=s["index"], window_start=s["window"][0], window_end=s["window"][1],
                            start=s["placed"][0], end=s["placed"][1], natural_duration=s["natural_duration"],
                            rate=s["rate"], stretch=s["stretch"], speed=s["speed"], borrowed=s["borrowed"],
                            overflow=s["overflow"], text=s["text"]) for s in report["segments"])


def whole_track(asr, delivered: Path, lines: tuple[FittedLine, ...], language: str, tmp: Path) -> list[float]:
    """The former method: the whole track transcribed in one call, each word given to the line it falls in."""
    audio, rate = decode_audio(delivered, key="outputs")
    wav = write_wav(tmp / "track.wav", resample(to_channels(audio, 1), rate, SPEECH_RATE), SPEECH_RATE)
    heard = qc._assign([w for seg in asr.transcribe(wav, language).segments for w in seg.words], lines)
    return [error_rates(x.text, " ".join(heard[x.index]), language)[1] for x in lines if x.text.strip()]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--languages", default="es,de,pt-BR")
    args = parser.parse_args()
    asr = create_transcriber(qc.EAR["backend"], model=qc.EAR["model"])
    encodes = [0]
    print(f"{'language':<9}{'method':<14}{'cpu s':>7}{'passes':>8}{'median CER':>12}{'mean CER':>10}{'flagged':>9}")
    for language in args.languages.split(","):
        folder = args.out / language
        delivered, lines = next(folder.glob("*.mp4")), lines_of(folder / "qc.json")
        whisper = asr._whisper(language)  # loaded (and warmed) outside the measurement
        list(whisper.transcribe(resample(to_channels(decode_audio(delivered, key="outputs")[0][:48000], 1), 48000,
                                         SPEECH_RATE)[:, 0], language=language.split("-")[0])[0])
        encode = whisper.encode

        def counted(*a, encode=encode, **k):
            encodes[0] += 1
            return encode(*a, **k)

        whisper.encode = counted
        with tempfile.TemporaryDirectory() as tmp:
            runs = []
            encodes[0], started = 0, cpu()
            cers = whole_track(asr, delivered, lines, language, Path(tmp))
            runs.append(("whole track", cpu() - started, encodes[0], cers))
            for label in ("grouped", "grouped, kept"):
                encodes[0], started = 0, cpu()
                result = qc.back_transcribe(delivered, lines, language, 0.25, Path(tmp) / "heard")
                runs.append((label, cpu() - started, encodes[0], [c.cer for c in result.lines]))
        whisper.encode = encode
        for label, seconds, passes, cers in runs:
            flagged = sum(c > 0.25 for c in cers)
            print(f"{language:<9}{label:<14}{seconds:>7.2f}{passes:>8}{statistics.median(cers):>12.3f}"
                  f"{statistics.mean(cers):>10.3f}{flagged:>9}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
