"""The lip-synced picture keeps the source's picture metadata (issue 12 item 4), through the render and the
deliverable's mux: display rotation, sample aspect ratio, field order, colour tags."""

from __future__ import annotations

from fractions import Fraction

import av
import pytest

from dubforge.core.contracts import Phoneme
from dubforge.lipsync.testmedia import carphone_clip, scaled, write_video
from dubforge.lipsync.video import probe, rotation
from dubforge.tasks.lipsync import render_lipsync, track_face
from dubforge.tasks.mux import mux_language
from tests.media import speak_english

N = 40


@pytest.fixture(scope="module")
def dub(tmp_path_factory):
    work = tmp_path_factory.mktemp("meta-dub")
    spoken = speak_english("Maybe Bob bought a map.", work / "dub.wav", lead=0.1, tail=0.1)
    return work / "dub.wav", [Phoneme(symbol=p, start=s, end=e) for w in spoken.words for p, s, e in w.phonemes]


def _picture(path):
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        cc, frame = s.codec_context, next(c.decode(s))
        return {"rotation": rotation(frame), "sar": s.sample_aspect_ratio, "field_order": cc.field_order,
                "colour": (cc.color_primaries, cc.color_trc, cc.colorspace, cc.color_range), "size": (s.width, s.height)}


CASES = {
    "rotation 90": dict(rotation=90),
    "rotation 270": dict(rotation=270),
    "sar 16:15": dict(codec=dict(sample_aspect_ratio=Fraction(16, 15))),
    "top field first": dict(codec=dict(field_order=2), x264={"x264-params": "interlaced=1:tff=1"}),
    "bt709 full range": dict(codec=dict(color_primaries=1, color_trc=1, colorspace=1, color_range=2)),
    "bt470bg limited": dict(codec=dict(color_primaries=5, color_trc=6, colorspace=5, color_range=1)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_render_and_deliverable_keep_the_picture_metadata(case, dub, tmp_path):
    spec = CASES[case]
    src = write_video(tmp_path / "src.mp4", scaled(carphone_clip(N), 320, 240), rate=Fraction(25),
                      rotation=spec.get("rotation", 0), options=spec.get("x264"), **spec.get("codec", {}))
    before = _picture(src)
    expected = {"rotation 90": ("rotation", 90), "rotation 270": ("rotation", 270),
                "sar 16:15": ("sar", Fraction(16, 15)), "top field first": ("field_order", 2)}.get(case)
    if expected:  # the source really carries what the case is about
        assert before[expected[0]] == expected[1]
    track = track_face(src, tmp_path / "cache")
    assert track.frames_with_face == N and track.rotation == spec.get("rotation", 0)
    wav, phonemes = dub
    result = render_lipsync(src, track, phonemes, [], tmp_path / "out.mp4", preset="ultrafast")
    assert result.frames_rendered == N
    rendered = _picture(result.out_video)
    assert rendered == before, case
    delivered = mux_language(result.out_video, wav, "spa", tmp_path / "es.mp4")
    assert _picture(delivered) == before, case
    info = probe(delivered)
    assert info.picture == probe(src).picture
