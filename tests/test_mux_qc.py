"""Muxing deliverables (MP4 per language, MKV master), provenance sidecars and delivery QC."""

from __future__ import annotations

import hashlib
import json
from fractions import Fraction
from importlib.util import find_spec
from pathlib import Path

import numpy as np
import pytest

from dubforge.core.errors import StageError
from dubforge.media import loudness
from dubforge.media.audio import read_wav, write_wav
from dubforge.media.probe import probe
from dubforge.tasks.mux import master_audio, mux_language, mux_master, write_provenance
from dubforge.tasks.qc import measure_delivery, subtitles_inside
from tests.test_ingest import clicks, make_video, onset, tone

METADATA = {"comment": "AI-modified: synthetic dubbed speech (dubforge)", "ai_modified": "true"}
SRT = """1
00:00:00,500 --> 00:00:01,400
Hola, ¿qué tal?

2
00:00:02,000 --> 00:00:09,000
Esta línea termina después del vídeo.
"""


def speechlike(seconds: float, rate: int = 48_000, seed: int = 0, level: float = 0.3) -> np.ndarray:
    """Stereo band-passed noise (100 Hz-4 kHz) with a syllable-like envelope: broadband, not a steady tone."""
    from scipy.signal import butter, sosfilt

    rng = np.random.default_rng(seed)
    n = round(seconds * rate)
    t = np.arange(n) / rate
    envelope = np.clip(np.sin(2 * np.pi * 3.0 * t), 0, None) ** 2
    noise = sosfilt(butter(4, [100, 4000], "bandpass", fs=rate, output="sos"), rng.standard_normal((n, 2)), axis=0)
    noise /= np.max(np.abs(noise))
    return (level * envelope[:, None] * noise).astype(np.float32)


def video_packets(path: Path, seconds: bool = False) -> list[tuple]:
    """(pts, dts, payload hash) of every video packet; pts in seconds if asked (time bases differ)."""
    import av

    with av.open(str(path)) as c:
        v = c.streams.video[0]
        if seconds:
            return [(float(p.pts * p.time_base), hashlib.sha1(bytes(p)).hexdigest()) for p in c.demux(v) if p.size]
        return [(p.pts, p.dts, hashlib.sha1(bytes(p)).hexdigest()) for p in c.demux(v) if p.size]


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("src")
    return make_video(d / "src.mp4", 3.0, Fraction(30000, 1001), audio=tone(3.0, 48_000), language="eng")


def wav_for(path: Path, video: Path, seed: int = 0) -> Path:
    duration = probe(video).duration
    data = speechlike(duration, seed=seed)[: round(duration * 48_000)]
    return write_wav(path, data, 48_000)


def test_mux_language(tmp_path, source):
    import av

    info = probe(source)
    dub = wav_for(tmp_path / "es.wav", source)
    srt_path = tmp_path / "es.srt"
    srt_path.write_text(SRT, encoding="utf-8")
    out = mux_language(source, dub, "es", tmp_path / "out" / "film.es.mp4", srt_path, METADATA)

    assert video_packets(out) == video_packets(source)  # picture stream-copied, timing unchanged
    with av.open(str(out)) as c:
        assert {k: c.metadata.get(k) for k in METADATA} == METADATA
        (a,) = c.streams.audio
        assert (a.codec_context.name, a.codec_context.sample_rate, a.codec_context.channels) == ("aac", 48_000, 2)
        assert a.metadata["language"] == "spa"
        (s,) = c.streams.subtitles
        assert s.codec_context.name == "mov_text" and s.metadata["language"] == "spa"
        # players show a track whose MP4 'enabled' flag is set (FFmpeg reads it back as 'default'): subtitles off
        assert a.disposition & av.stream.Disposition.default and not s.disposition & av.stream.Disposition.default
        cues = [(p.pts * p.time_base, (p.pts + p.duration) * p.time_base) for p in c.demux(s) if p.size]
        assert float(cues[-1][1]) <= info.duration + 1e-3  # the long cue was cut at the end of the picture
        assert abs(c.duration / 1e6 - info.duration) <= 1 / info.fps
    data = out.read_bytes()
    assert 0 < data.find(b"moov") < data.find(b"mdat")  # faststart: the index comes first

    qc = measure_delivery(out)
    assert abs(qc.duration - info.duration) <= 1 / info.fps
    assert qc.reference_residual_db is None
    # against the WAV it was encoded from: AAC noise only; against another: nothing in common
    assert measure_delivery(out, reference=dub).reference_residual_db < -20
    assert measure_delivery(out, reference=wav_for(tmp_path / "other.wav", source, seed=1)).reference_residual_db > -3
    assert qc.frame_count == info.frame_count == 90 and qc.video_duration == pytest.approx(info.duration, abs=1e-3)
    assert qc.languages == ("spa",) and qc.subtitles[0].language == "spa"
    ref_lufs, ref_peak = loudness.measure(*read_wav(dub))
    assert qc.integrated_lufs == pytest.approx(ref_lufs, abs=0.5)
    assert qc.true_peak_dbtp == pytest.approx(ref_peak, abs=1.0)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["film.es.mp4"]  # no temporaries left

    sidecar = write_provenance(out, {"generator": "dubforge", "actions": ["dub"]})
    record = json.loads(sidecar.read_text())
    assert sidecar.name == "film.es.mp4.provenance.json" and record["generator"] == "dubforge"
    assert record["asset"]["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()


def test_mux_master(tmp_path, source):
    info = probe(source)
    original = wav_for(tmp_path / "orig.wav", source, seed=1)
    de, fr = wav_for(tmp_path / "de.wav", source, seed=2), wav_for(tmp_path / "fr.wav", source, seed=3)
    de_srt = tmp_path / "de.srt"
    de_srt.write_text(SRT, encoding="utf-8")
    out = mux_master(source, original, "en", [("de", de, de_srt), ("fr", fr, None)], tmp_path / "film.mkv",
                     METADATA)

    ours, theirs = video_packets(out, seconds=True), video_packets(source, seconds=True)
    assert [d for *_, d in ours] == [d for *_, d in theirs]  # same coded pictures, same order
    assert np.allclose([p for p, *_ in ours], [p for p, *_ in theirs], atol=1e-3)  # Matroska: 1 ms ticks
    qc = measure_delivery(out, stream_index=1)
    assert {k: qc.metadata.get(k) for k in METADATA} == METADATA
    names = {"de": "Deutsch", "fr": "Français"} if find_spec("language_data") else {"de": "de", "fr": "fr"}
    assert [(t.language, t.title, t.default, t.codec) for t in qc.audio] == [
        ("eng", "Original", True, "aac"),
        ("ger", f"{names['de']} (dubbed)", False, "aac"),
        ("fre", f"{names['fr']} (dubbed)", False, "aac"),
    ]
    assert [(t.language, t.title, t.default, t.codec) for t in qc.subtitles] == [("ger", names["de"], False, "srt")]
    assert qc.frame_count == 90 and abs(qc.duration - info.duration) <= 1 / info.fps
    assert qc.measured_audio == 1
    assert qc.integrated_lufs == pytest.approx(loudness.measure(*read_wav(de))[0], abs=0.5)


def click_after_first_frame(path: Path, audio_index: int = 0) -> float:
    """Seconds from the first video frame to the first click in audio track a:`audio_index`."""
    import av

    with av.open(str(path)) as c:
        v, a = c.streams.video[0], c.streams.audio[audio_index]
        frames = [(float(f.pts * f.time_base), f.to_ndarray()) for f in c.decode(a)]
        first_video = float(v.start_time * v.time_base)
    samples = np.concatenate([x for _, x in frames], axis=1).T
    return frames[0][0] + onset(samples, 48_000) - first_video


def test_mux_keeps_sync_when_video_starts_late(tmp_path):
    """Source audio leads the picture by 0.4 s: the dub (t=0 = first frame) must start with the picture."""
    import av

    src = make_video(tmp_path / "late.mp4", 2.0, 25, audio=tone(2.0, 48_000), audio_delay=-0.4)
    info = probe(src)
    assert info.start_time == pytest.approx(0.4, abs=1e-3)
    dub = write_wav(tmp_path / "dub.wav", clicks(info.duration, 48_000, [0.5]), 48_000)
    srt_path = tmp_path / "de.srt"
    srt_path.write_text("1\n00:00:00,500 --> 00:00:01,000\nJetzt\n", encoding="utf-8")

    mp4 = mux_language(src, dub, "de", tmp_path / "late.de.mp4", srt_path)
    assert video_packets(mp4) == video_packets(src)
    assert click_after_first_frame(mp4) == pytest.approx(0.5, abs=0.002)

    mkv = mux_master(src, None, "en", [("de", dub, srt_path)], tmp_path / "late.mkv")
    assert click_after_first_frame(mkv) == pytest.approx(0.5, abs=0.002)
    again = mux_master(src, None, "en", [("de", dub, srt_path)], tmp_path / "again.mkv")
    assert again.read_bytes() == mkv.read_bytes()  # deterministic (no random Matroska UIDs)
    with av.open(str(mkv)) as c:
        v, s = c.streams.video[0], c.streams.subtitles[0]
        (cue,) = [p for p in c.demux(s) if p.size]
        assert float(cue.pts * cue.time_base - v.start_time * v.time_base) == pytest.approx(0.5, abs=0.002)


def test_errors_and_helpers(tmp_path, source):
    with pytest.raises(StageError, match=r"(?s)mux out\.mp4: ffmpeg exited .*missing\.wav"):
        mux_language(source, tmp_path / "missing.wav", "es", tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()
    with pytest.raises(StageError, match="no audio stream 3"):
        measure_delivery(source, stream_index=3)

    inside, outside = tmp_path / "in.srt", tmp_path / "out.srt"
    inside.write_text("1\n00:00:00,500 --> 00:00:02,900\nok\n", encoding="utf-8")
    outside.write_text(SRT, encoding="utf-8")
    assert subtitles_inside(inside, 3.0) and not subtitles_inside(outside, 3.0)


def test_ffmpeg_wrapper_takes_ffmpeg_python_streams(tmp_path, source):
    import ffmpeg as ffmpeg_python

    from dubforge.media import ffmpeg

    wav = tmp_path / "a.wav"
    ffmpeg.run(ffmpeg_python.input(str(source)).output(str(wav), ac=1, ar=16_000))
    data, rate = read_wav(wav)
    assert rate == 16_000 and data.shape[1] == 1 and abs(data.shape[0] / rate - 3.0) < 0.05
    with pytest.raises(StageError, match="(?s)status.*nothing.mp4"):
        ffmpeg.run(ffmpeg_python.input(str(tmp_path / "nothing.mp4")).output(str(wav)))


@pytest.mark.parametrize("audio_delay", [-0.5, 0.5, 2.0])
def test_every_deliverable_keeps_the_source_av_offset(tmp_path, audio_delay):
    """Source audio starting before/after its picture: the language MP4 (source picture or a lip-sync render whose
    picture starts at 0) and every track of the master keep the source's sync to one frame."""
    seconds, fps = 4.0, 25
    src = make_video(tmp_path / "src.mp4", seconds, fps, audio=np.repeat(clicks(seconds, 48_000, [2.2]), 2, axis=1),
                     audio_delay=audio_delay, language="eng")
    original = click_after_first_frame(src)
    assert original == pytest.approx(2.2 + audio_delay, abs=0.03)  # AAC priming of the test encoder
    info = probe(src)
    dub = write_wav(tmp_path / "dub.wav", clicks(info.duration, 48_000, [0.7]), 48_000)
    rendered = make_video(tmp_path / "render.mp4", info.duration, fps)  # a lip-sync render: picture from t=0
    srt_path = tmp_path / "de.srt"
    srt_path.write_text("1\n00:00:00,700 --> 00:00:01,000\nJetzt\n", encoding="utf-8")

    plain = mux_language(src, dub, "de", tmp_path / "de.mp4", srt_path)
    synced = mux_language(rendered, dub, "fr", tmp_path / "fr.mp4", srt_path)
    for mp4 in (plain, synced):
        assert click_after_first_frame(mp4) == pytest.approx(0.7, abs=0.002)
    assert master_audio(plain, dub, src) == plain  # the source's picture: its AAC is copied
    tracks = [(lang, master_audio(mp4, dub, src), srt_path) for lang, mp4 in [("de", plain), ("fr", synced)]]
    mkv = mux_master(src, src, "en", tracks, tmp_path / "master.mkv")
    assert click_after_first_frame(mkv, 0) == pytest.approx(original, abs=1 / fps)
    assert click_after_first_frame(mkv, 1) == pytest.approx(0.7, abs=1 / fps)
    assert click_after_first_frame(mkv, 2) == pytest.approx(0.7, abs=1 / fps)


def test_master_carries_every_source_audio_stream_with_its_tag(tmp_path):
    from tests.test_ingest import dominant_hz, two_language_video

    src = two_language_video(tmp_path / "two.mp4")
    dub = write_wav(tmp_path / "es.wav", tone(probe(src).duration, 48_000, 500.0), 48_000)
    mkv = mux_master(src, src, "en", [("es", dub, None)], tmp_path / "master.mkv", original_stream=1)
    qc = measure_delivery(mkv)
    names = "Français (original)" if find_spec("language_data") else "fra (original)"
    assert [(t.language, t.title, t.default) for t in qc.audio] == [
        ("eng", "Original", True), ("fre", names, False), ("spa", _title_of("es"), False)]
    import av

    with av.open(str(mkv)) as c:  # each track is the stream it says: English 700 Hz, French 300 Hz
        for index, hz in [(0, 700.0), (1, 300.0)]:
            samples = np.concatenate([f.to_ndarray() for f in c.decode(c.streams.audio[index])], axis=1).T
            assert dominant_hz(samples, 48_000) == pytest.approx(hz, abs=3.0)
            c.seek(0)


def _title_of(lang: str) -> str:
    from dubforge.tasks.mux import _title

    return _title(lang, "dubbed")


def test_which_lines_changed_since_they_were_heard():
    """A group heard before: the lines whose audio changed are found after the loudness gain moved, with the gain
    most lines agree on; a change between the lines (no line changed) means hearing the whole group again."""
    from dubforge.core.contracts import FittedLine
    from dubforge.tasks.qc import SPEECH_RATE, _changed_lines, _Group

    rng = np.random.default_rng(3)

    def line(index: int, start: float, end: float) -> FittedLine:
        return FittedLine(index=index, window_start=start, window_end=end, start=start, end=end,
                          natural_duration=end - start, rate=1, stretch=1, speed=1, borrowed=0, overflow=0, text="x")

    lines = (line(0, 0.5, 2.0), line(1, 3.0, 4.5), line(2, 5.5, 7.0))
    group = _Group(0.0, 8.0, lines)
    before = np.zeros(8 * SPEECH_RATE, np.float32)
    for x in lines:
        span = slice(int(x.start * SPEECH_RATE), int(x.end * SPEECH_RATE))
        before[span] = rng.standard_normal(span.stop - span.start) * 0.1
    quieter = before * 10 ** (-2 / 20) + rng.standard_normal(len(before)).astype(np.float32) * 1e-4
    assert _changed_lines(before, quieter, group) == []
    edited = quieter.copy()
    edited[3 * SPEECH_RATE : int(4.5 * SPEECH_RATE)] = rng.standard_normal(int(1.5 * SPEECH_RATE)) * 0.1
    assert _changed_lines(before, edited, group) == [lines[1]]
    between = quieter.copy()
    between[int(2.5 * SPEECH_RATE) : int(2.6 * SPEECH_RATE)] = 0.3  # a click in the gap, outside every line
    assert _changed_lines(before, between, group) is None
    assert _changed_lines(before, quieter[:-1], group) is None


def test_a_probed_file_is_not_opened_again(tmp_path, monkeypatch):
    """What probe reads is kept by the file's stat across processes: the mux and the master take the timing and
    clock of a source ingest probed without FFmpeg opening it again (an hour's MP4 index: about 25 MB), and a
    rewritten file is read afresh."""
    import av

    from dubforge.media import probe as probe_module

    src = make_video(tmp_path / "late.mp4", 2.0, 25, audio=tone(2.0, 48_000), audio_delay=-0.4)
    first = probe(src)
    assert (first.start_time, first.file_start_time) == pytest.approx((0.4, 0.0), abs=1e-3)
    dub = write_wav(tmp_path / "dub.wav", clicks(first.duration, 48_000, [0.5]), 48_000)
    mp4 = mux_language(src, dub, "de", tmp_path / "late.de.mp4")
    probe(mp4)

    opened: list[str] = []
    real_open = av.open
    monkeypatch.setattr(probe_module.av, "open", lambda path, *a, **k: opened.append(path) or real_open(path, *a, **k))
    assert probe(src) == first
    mux_language(src, dub, "de", tmp_path / "again.de.mp4")
    assert master_audio(mp4, dub, src) == mp4
    mux_master(src, None, "en", [("de", dub, None)], tmp_path / "late.mkv")
    assert opened == []

    make_video(src, 3.0, 25, audio=tone(3.0, 48_000))  # rewritten in place
    opened.clear()
    assert probe(src).duration == pytest.approx(3.0, abs=0.05) and opened == [str(src)]
