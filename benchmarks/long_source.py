"""Peak memory and time per stage on a long source against a 1-minute one (issue 12: memory flat in length).

    .venv/bin/python benchmarks/long_source.py [--minutes 60] [--short 1] [--asr-minutes 10] [--lipsync-minutes M]
                                               [--stages a,b] [--work DIR] [--json FILE]

The source is the 20 s demo (`dubforge demo`: the real talking-head clip at 1280x720, Piper English speech over
music and effects) looped by stream copy to each length, with its M&E stem and English script looped alike and
the Spanish script's lines repeated on the same timeline. Each stage runs in a fresh Python process on the
records the earlier stages wrote, as the flow runs it: ingest, separate (provided M&E), align (pocketsphinx on
the English script), voice (fit_track with espeak, the cheapest real TTS), mix (ebu-r128), mux (the language's
MP4), qc (measure_delivery + the dialogue-gated loudness of the delivered file), asr (faster-whisper) and
back-transcription (Whisper base on the delivered MP4). Printed per stage and length: peak RSS of the process
(its VmHWM or its largest child's, MiB), wall and CPU seconds, and the ratio long/short. "python" is the floor: a process that only
imports the stage modules.

Whisper runs at about 0.2-0.3x real time on 2 cores, so asr and back-transcription get at most --asr-minutes of
the long source (they work in windows of about a minute: more minutes add time, not memory); the table says so.
--lipsync-minutes M adds face tracking and the lip-sync render + scorecard (1280x720), on a source of M minutes
against the short one (rendering an hour of 720p takes hours on 2 cores). --stages measures only the stages named
(with what they need run first, unmeasured): `--stages track-face --lipsync-minutes 4` tracks faces alone.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pipeline import timed  # noqa: E402

STAGES = ("python", "ingest", "separate", "align", "voice", "mix", "mux", "qc", "asr", "back-transcription")
LIPSYNC_STAGES = ("track-face", "lipsync")  # after ingest, align and voice (--lipsync-minutes)
TARGET_RATIO = 1.10


# --- one stage, in its own process ------------------------------------------------------------------------------

def run_stage(stage: str, folder: Path) -> None:
    """Run `stage` on the records in `folder` and write its own record there."""
    from dubforge.core.contracts import DubTrack, Line, Mix, SourceMedia, Stems, Transcript
    from dubforge.core.manifest import Timing
    from dubforge.core.scripts import read_script
    from dubforge.models.espeak_tts import EspeakSynthesizer
    from dubforge.tasks.deliver import _dialogue_gated_lufs
    from dubforge.tasks.fit import fit_track
    from dubforge.tasks.ingest import ingest
    from dubforge.tasks.mix import mix
    from dubforge.tasks.mux import mux_language
    from dubforge.tasks.qc import back_transcribe, measure_delivery
    from dubforge.tasks.separate import separate
    from dubforge.tasks.transcribe import align_source, transcribe

    # records as UTF-8 bytes, as pydantic reads and writes them: a str of an hour's dub track is 6 MB (UCS-2)
    def load(name: str, kind):
        return kind.model_validate_json((folder / f"{name}.json").read_bytes())

    def save(name: str, record) -> None:
        (folder / f"{name}.json").write_bytes(record.__pydantic_serializer__.to_json(record))

    from dubforge.media.audio import LONG_SOURCE_S, bound_heap

    length = folder / "seconds"
    if length.is_file() and float(length.read_text()) >= LONG_SOURCE_S:
        bound_heap()  # as the flow does for a source this long
    work = folder / "work"
    work.mkdir(exist_ok=True)
    if stage == "python":
        return
    if stage == "ingest":
        save("media", ingest(folder / "source.mp4", work))
        return
    media = load("media", SourceMedia)
    if stage == "separate":
        save("stems", separate(media, folder / "me.wav", "provided", work))
    elif stage == "align":
        segments = read_script(folder / "source.en.srt", video_duration=media.duration, column="transcription")
        script = Transcript(language="en", segments=tuple(segments), backend="script")
        aligned = align_source(media, script, "auto", from_script=True)
        save("transcript", aligned)
        print(f"aligned words: {sum(len(s.words) for s in aligned.segments)}")
    elif stage == "voice":
        segments = read_script(folder / "source.es.srt", video_duration=media.duration)
        lines = [Line(index=i, start=s.start, end=s.end, source_text="", text=s.text) for i, s in enumerate(segments)]
        save("dub", fit_track(lines, {"*": EspeakSynthesizer("es")}, Timing(), media.duration, work, "es"))
    elif stage == "mix":
        save("mix", mix(load("dub", DubTrack), load("stems", Stems), media.mix_wav, "replace", "ebu-r128", -14.0,
                        work / "mix.es.wav"))
    elif stage == "mux":
        mux_language(media.video, load("mix", Mix).wav, "es", folder / "out.es.mp4", subtitles=folder / "source.es.srt")
    elif stage == "qc":
        delivery = measure_delivery(folder / "out.es.mp4")
        gated = _dialogue_gated_lufs(folder / "out.es.mp4", load("dub", DubTrack))
        print(f"delivered {delivery.duration:.2f} s, {delivery.integrated_lufs:.2f} LUFS (dialogue-gated {gated:.2f}), "
              f"true peak {delivery.true_peak_dbtp:.2f} dBTP")
    elif stage == "asr":
        heard = transcribe(folder / "asr.wav", "en")
        print(f"asr segments: {len(heard.segments)}")
    elif stage == "back-transcription":
        dub = load("dub", DubTrack)
        limit = float((folder / "asr-seconds").read_text())
        lines = tuple(line for line in dub.lines if line.end <= limit)
        checks = back_transcribe(folder / "asr.es.mp4", lines, "es", 0.25, work)
        print(f"back-transcription median CER: {checks.median_cer}")
    elif stage == "track-face":
        import shutil

        from dubforge.tasks.lipsync import track_face

        shutil.rmtree(work / "track", ignore_errors=True)  # made afresh, not read from an earlier run's cache
        save("face", track_face(media.video, work / "track", media.speech_wav))
    elif stage == "lipsync":
        from dubforge.core.manifest import Lipsync
        from dubforge.lipsync.records import FaceTrack
        from dubforge.tasks.lipsync import lipsync_language

        picture = lipsync_language(media.video, load("face", FaceTrack), load("dub", DubTrack),
                                   load("transcript", Transcript), Lipsync(), False, None, folder / "lipsync.es.mp4")
        print(f"lip-sync coverage {picture.scorecard.get('coverage')}, {picture.result.frames_rendered} frames rendered")
    else:
        raise SystemExit(f"unknown stage {stage}")


def peak_kib() -> int:
    """This process's peak RSS (VmHWM: its own, from exec on) or its largest child's (ffmpeg), whichever is larger.

    wait4's ru_maxrss cannot be used from the parent: Linux carries the parent's peak into a child it spawns
    (vfork + exec keeps the larger of the two), so every stage would read as the benchmark's own size."""
    import resource

    status = Path("/proc/self/status").read_text()
    hwm = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:"))
    return max(hwm, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)


# --- sources ------------------------------------------------------------------------------------------------------

def ffmpeg(*args: object) -> None:
    import imageio_ffmpeg

    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-y", *map(str, args)], check=True)


def looped_srt(path: Path, period: float, total: float, out: Path) -> int:
    """The cues of `path` repeated every `period` seconds up to `total`; returns the number of cues."""
    import srt

    cues = list(srt.parse(path.read_text(encoding="utf-8-sig")))
    looped, k = [], 0
    while k * period < total:
        for cue in cues:
            start, end = cue.start.total_seconds() + k * period, cue.end.total_seconds() + k * period
            if end <= total:
                looped.append(srt.Subtitle(len(looped) + 1, timedelta(seconds=start), timedelta(seconds=end),
                                           cue.content))
        k += 1
    out.write_text(srt.compose(looped), encoding="utf-8")
    return len(looped)


def audio_period(mp4: Path) -> float:
    """How far the speech moves on per loop: the span of the audio packets that `-stream_loop` copies. AAC's priming
    makes it 20.008 s for the 20 s demo; scripts looped every 20 s drifted 1.4 s from the speech over an hour, and
    pocketsphinx then failed on most lines."""
    import av

    with av.open(str(mp4)) as container:
        stream = container.streams.audio[0]
        pts = [(p.pts, p.duration) for p in container.demux(stream) if p.pts is not None]
    return float((max(t + d for t, d in pts) - min(t for t, _ in pts)) * stream.time_base)


def make_source(demo: Path, minutes: float, asr_minutes: float, folder: Path) -> None:
    """Loop the demo (picture and sound copied, no re-encode) to `minutes`, with its stem and scripts."""
    seconds = minutes * 60
    folder.mkdir(parents=True, exist_ok=True)
    truth = json.loads((demo / "demo-truth.json").read_text(encoding="utf-8"))
    period = audio_period(demo / "media" / "demo.mp4")
    if not (folder / "source.mp4").is_file():
        ffmpeg("-stream_loop", "-1", "-i", demo / "media" / "demo.mp4", "-t", seconds, "-c", "copy",
               folder / "source.part.mp4")
        (folder / "source.part.mp4").replace(folder / "source.mp4")
        ffmpeg("-stream_loop", "-1", "-i", demo / "media" / "me.wav", "-t", seconds, "-c:a", "pcm_f32le", folder / "me.wav")
    english = demo / "english.srt"
    import srt

    english.write_text(srt.compose([srt.Subtitle(i + 1, timedelta(seconds=c["start"]),
                                                 timedelta(seconds=c["end"]), c["text"])
                                    for i, c in enumerate(truth["lines"])]), encoding="utf-8")
    looped_srt(english, period, seconds, folder / "source.en.srt")
    looped_srt(demo / "scripts" / "demo.es.srt", period, seconds, folder / "source.es.srt")
    asr_seconds = min(seconds, asr_minutes * 60)
    (folder / "asr-seconds").write_text(str(asr_seconds))
    (folder / "seconds").write_text(str(seconds))


def asr_inputs(folder: Path) -> None:
    """The first --asr-minutes of the ingested speech and of the delivered MP4 (after ingest and mux)."""
    asr_seconds = float((folder / "asr-seconds").read_text())
    media = json.loads((folder / "media.json").read_text(encoding="utf-8"))
    ffmpeg("-i", media["speech_wav"], "-t", asr_seconds, "-c:a", "pcm_f32le", folder / "asr.wav")
    ffmpeg("-i", folder / "out.es.mp4", "-t", asr_seconds, "-c", "copy", folder / "asr.es.mp4")


# --- the comparison -----------------------------------------------------------------------------------------------

def measure(folder: Path, log: Path, stages: tuple[str, ...] = STAGES) -> dict[str, dict]:
    results = {}
    for stage in stages:
        if stage == "asr":
            asr_inputs(folder)
        result = timed([sys.executable, __file__, "--stage", stage, "--folder", str(folder)], log=log.with_suffix(f".{stage}.log"))
        if result["rc"] != 0:
            tail = log.with_suffix(f".{stage}.log").read_text(encoding="utf-8", errors="replace")[-2000:]
            raise SystemExit(f"stage {stage} failed on {folder.name} (exit {result['rc']}):\n{tail}")
        out = log.with_suffix(f".{stage}.log").read_text(encoding="utf-8", errors="replace").strip().splitlines()
        result["peak_mib"] = int(out[-1].split()[1]) / 1024  # the stage's own peak (see peak_kib)
        result["note"] = next((line for line in reversed(out[:-1]) if line.strip()), "")
        results[stage] = result
        print(f"  {folder.name:<10} {stage:<20} {result['peak_mib']:>8.0f} MiB {result['wall']:>8.1f} s wall "
              f"{result['cpu']:>8.1f} s cpu  {result['note'][:70]}", flush=True)
    return results


def lipsync_measure(work: Path, short: float, minutes: float, asr_minutes: float,
                    stages: tuple[str, ...] = LIPSYNC_STAGES) -> dict[str, dict]:
    """Face tracking and lip-sync (1280x720 rendering: slow on 2 cores, hence a length of its own)."""
    folder = work / f"{minutes:g}min"
    make_source(work / "demo", minutes, asr_minutes, folder)
    needs = (("ingest", "media"), ("align", "transcript"), ("voice", "dub"))[:3 if "lipsync" in stages else 1]
    for source in (work / f"{short:g}min", folder):  # the records the stages read, made unmeasured when missing
        missing = tuple(stage for stage, record in needs if not (source / f"{record}.json").is_file())
        if missing:
            measure(source, work / "lipsync-prep.log", missing)
    return {"short": measure(work / f"{short:g}min", work / "lipsync-short.log", stages),
            "long": measure(folder, work / "lipsync.log", stages)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=60.0, help="the long source (default 60)")
    parser.add_argument("--short", type=float, default=1.0, help="the reference source (default 1)")
    parser.add_argument("--asr-minutes", type=float, default=10.0, help="most minutes given to Whisper (default 10)")
    parser.add_argument("--lipsync-minutes", type=float, default=0.0,
                        help="also measure face tracking and lip-sync on a source this long against --short (default: off)")
    parser.add_argument("--stages", help="comma-separated stages to measure (default: all of them)")
    parser.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary folder, removed)")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.stage:
        run_stage(args.stage, args.folder)
        print(f"\nPEAK_KIB {peak_kib()}")
        return 0

    import tempfile

    from dubforge.demo.project import make_demo

    temp = None if args.work else tempfile.TemporaryDirectory(prefix="dubforge-long-")
    work = (args.work or Path(temp.name)).absolute()
    try:
        began = time.perf_counter()
        make_demo(work / "demo", 20.0, ["es"])
        wanted = set(args.stages.split(",")) if args.stages else set(STAGES + LIPSYNC_STAGES)
        if wanted - set(STAGES + LIPSYNC_STAGES):
            raise SystemExit(f"unknown stages: {', '.join(sorted(wanted - set(STAGES + LIPSYNC_STAGES)))}")
        stages = tuple(stage for stage in STAGES if stage in wanted)
        lengths = {"short": args.short, "long": args.minutes}
        for name, minutes in lengths.items():
            if stages or name == "short":
                make_source(work / "demo", minutes, args.asr_minutes, work / f"{minutes:g}min")
        print(f"long-source benchmark: {args.short:g} min vs {args.minutes:g} min (demo looped, 1280x720), "
              f"es, ebu-r128; Whisper on at most {args.asr_minutes:g} min")
        print(f"machine: {os.cpu_count()} CPUs, {platform.machine()}, Python {platform.python_version()}, "
              f"load average {os.getloadavg()[0]:.2f}; sources ready in {time.perf_counter() - began:.0f} s")
        measured = {name: measure(work / f"{minutes:g}min", work / f"{name}.log", stages) if stages else {}
                    for name, minutes in lengths.items()}
        rows = [(stage, measured["short"][stage], measured["long"][stage], args.minutes) for stage in stages]
        lipsync_stages = tuple(stage for stage in LIPSYNC_STAGES if stage in wanted)
        if args.lipsync_minutes and lipsync_stages:
            measured["lipsync"] = lipsync_measure(work, args.short, args.lipsync_minutes, args.asr_minutes,
                                                  lipsync_stages)
            rows += [(stage, measured["lipsync"]["short"][stage], measured["lipsync"]["long"][stage], args.lipsync_minutes)
                     for stage in lipsync_stages]
        asr_long = min(args.minutes, args.asr_minutes)
        print(f"\n  {'stage':<20}{'peak MiB':>10}{'peak MiB':>10}{'ratio':>7}{'wall s':>9}{'wall s':>9}"
              f"{'cpu s':>8}{'cpu s':>8}")
        print(f"  {'':<20}{args.short:>8g}mn{args.minutes:>8g}mn{'':>7}{args.short:>7g}mn{args.minutes:>7g}mn"
              f"{args.short:>6g}mn{args.minutes:>6g}mn")
        worst = 0.0
        for stage, a, b, minutes in rows:
            ratio = b["peak_mib"] / a["peak_mib"]
            worst = max(worst, ratio)
            note = f"  ({args.short:g} vs {minutes:g} min)" if minutes != args.minutes else ""
            if stage in ("asr", "back-transcription"):
                note = f"  (Whisper on {min(args.short, args.asr_minutes):g} vs {asr_long:g} min)"
            print(f"  {stage:<20}{a['peak_mib']:>10.0f}{b['peak_mib']:>10.0f}{ratio:>7.2f}{a['wall']:>9.1f}{b['wall']:>9.1f}"
                  f"{a['cpu']:>8.1f}{b['cpu']:>8.1f}{note}")
        print(f"\n  target: every stage's peak within {TARGET_RATIO - 1:.0%} of the {args.short:g}-minute source: "
              f"worst ratio {worst:.2f} {'PASS' if worst <= TARGET_RATIO else 'FAIL'}; load average now "
              f"{os.getloadavg()[0]:.2f}")
        if args.json:
            args.json.write_text(json.dumps({"minutes": args.minutes, "short": args.short, "asr_minutes": args.asr_minutes,
                                             "stages": measured}, indent=2), encoding="utf-8")
        return 0 if worst <= TARGET_RATIO else 1
    finally:
        if temp:
            temp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
