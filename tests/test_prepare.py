"""`prepare` without Prefect: review sheets, speaker cards with sample clips, and the show's voice bank."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from dubforge.core.errors import InputError
from dubforge.core.plan import make_plan
from dubforge.core.scripts import read_script
from dubforge.flows.prepare import prepare
from dubforge.media import ffmpeg
from dubforge.media.audio import read_wav, resample, write_wav
from dubforge.models.base import create_synthesizer

LINES = [  # (speaker, start, English, Spanish)
    ("ANA", 0.5, "Welcome back to the workshop, everyone.", "Bienvenidos de nuevo al taller."),
    ("ANA", 4.0, "Today we are building a wooden chair together.", "Hoy construimos juntos una silla."),
    ("BEN", 8.0, "Sounds good.", "Me parece bien."),
    ("ANA", 10.5, "First, we measure every piece twice before cutting.", "Primero medimos cada pieza dos veces."),
]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("show") / "episode-1"
    (root / "media").mkdir(parents=True)
    tts = create_synthesizer("espeak", language="en")
    rate, track, cues_en, cues_es = 48_000, np.zeros(int(16 * 48_000), np.float32), [], []
    for i, (speaker, start, english, spanish) in enumerate(LINES, start=1):
        speech = tts.synthesize(english, root / f"line{i}.wav")
        data, sr = read_wav(speech.wav)
        mono = resample(data.mean(axis=1, keepdims=True), sr, rate)[:, 0]
        track[int(start * rate):int(start * rate) + len(mono)] += mono
        end = start + speech.duration
        stamp = lambda t: f"00:00:{int(t):02d},{int(round(t % 1 * 1000)):03d}"  # noqa: E731
        cues_en.append(f"{i}\n{stamp(start)} --> {stamp(end)}\n{speaker}: {english}\n")
        cues_es.append(f"{i}\n{stamp(start)} --> {stamp(end)}\n{spanish}\n")
    write_wav(root / "speech.wav", track[:, None], rate)
    ffmpeg.run(["-f", "lavfi", "-i", "testsrc=s=160x120:r=25:d=16", "-i", root / "speech.wav", "-pix_fmt", "yuv420p",
                "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest", root / "media" / "ep1.mp4"])
    (root / "media" / "ep1.en.srt").write_text("\n".join(cues_en), encoding="utf-8")
    (root / "media" / "ep1.es.srt").write_text("\n".join(cues_es), encoding="utf-8")
    (root.parent / "voices.yaml").write_text("ANA:\n  es: {backend: espeak, name: es, rate: 1.1}\n", encoding="utf-8")
    manifest = root / "ep1.yaml"
    manifest.write_text(
        "version: 1\nproject: ep1\nsource: {video: media/ep1.mp4, language: en, script: media/ep1.en.srt}\n"
        "voice_bank: ../voices.yaml\n"
        "glossary: {fixed: {chair: {es: silla}, workshop: {es: taller}, piece: {es: tabla}}}\n"
        "targets:\n  - {language: es, translation: {from: file, path: media/ep1.es.srt}, voice: {backend: espeak}}\n"
        "  - {language: pt-BR, translation: {from: machine}}\n", encoding="utf-8")
    return root, manifest, prepare(manifest)


def test_review_sheet_columns_and_values(project):
    root, _, summary = project
    assert set(summary) == {"es", "pt-BR"}
    with open(root / "out" / "review" / "ep1.es.review.csv", encoding="utf-8-sig", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["line_id"] for r in rows] == ["1", "2", "3", "4"]
    assert [r["speaker"] for r in rows] == ["ANA", "ANA", "BEN", "ANA"]  # from the source script, matched by time
    assert rows[0]["transcription"] == LINES[0][2] and rows[0]["translation"] == LINES[0][3]
    assert all(float(r["spoken_seconds"]) > 0 and int(r["characters"]) == len(r["translation"]) for r in rows)
    for r in rows:
        spoken, window = float(r["spoken_seconds"]), float(r["window_seconds"])
        assert (r["fit"] == "fits") == (spoken <= window + 0.005)
    assert rows[0]["glossary"] == "'workshop' -> 'taller': ok"
    assert rows[3]["glossary"] == "'piece' -> 'tabla': MISSING" and summary["es"]["glossary_missing"] == 1
    sheet = read_script(root / "out" / "review" / "ep1.es.review.xlsx", video_duration=16.0)  # what `run` reads
    assert [(s.speaker, s.text) for s in sheet] == [(r["speaker"], r["translation"]) for r in rows]


def test_speaker_cards_with_sample_clips_and_voice_bank(project):
    root, _, _ = project
    cards = {card["speaker"]: card for card in json.loads((root / "out" / "review" / "speakers.json").read_text())}
    assert set(cards) == {"ANA", "BEN"} and cards["ANA"]["lines"] == 3
    sample, rate = read_wav(root / "out" / cards["ANA"]["sample"])
    assert 5.0 <= len(sample) / rate <= 10.0 and np.abs(sample).max() > 0.1
    assert cards["BEN"]["sample"] is None and "under 5 s" in cards["BEN"]["sample_note"]
    assert cards["ANA"]["voices"]["es"] == {"backend": "espeak", "name": "es", "clone": False, "rate": 1.1,
                                            "intonation": "source", "chosen_by": "voice bank"}
    assert cards["BEN"]["voices"]["es"]["chosen_by"] == "default voice"
    assert cards["ANA"]["voices"]["pt-BR"]["chosen_by"] == "default voice"  # the bank has no pt voice for ANA


def test_bad_voice_bank_is_named(project):
    root, manifest, _ = project
    (root / "voices.yaml").write_text("ANA:\n  es: {backend: espeak, speed: 2}\n", encoding="utf-8")
    text = manifest.read_text()
    manifest.write_text(text.replace("voice_bank: ../voices.yaml\n", ""), encoding="utf-8")  # default: beside it
    try:
        with pytest.raises(InputError, match=r"voices.yaml.*ANA.es.speed"):
            make_plan(manifest)
    finally:
        manifest.write_text(text, encoding="utf-8")
        (root / "voices.yaml").unlink()


def test_fit_helper_suggests_a_shorter_line_beside_it(project):
    """With `rewrite` configured, an overflowing line gets the endpoint's shorter version in the sheet's suggestion
    column (checked by synthesis) and in the log; the translation itself is never changed."""
    from tests.test_translate import FakeLLM

    root, manifest, _ = project
    llm = FakeLLM()
    llm.scripted = ["Vale."] * 10
    es = root / "media" / "ep1.es.srt"
    original_es, original_manifest = es.read_text(encoding="utf-8"), manifest.read_text(encoding="utf-8")
    long_line = "Me parece una idea excelente, de verdad, y creo que deberíamos empezar ahora mismo sin esperar más."
    es.write_text(original_es.replace(LINES[2][3], long_line), encoding="utf-8")
    manifest.write_text(original_manifest + f"rewrite: {{endpoint: '{llm.url}', model: local}}\n", encoding="utf-8")
    try:
        summary = prepare(manifest, ["es"])
    finally:
        es.write_text(original_es, encoding="utf-8")
        manifest.write_text(original_manifest, encoding="utf-8")
        llm.server.shutdown()
        llm.server.server_close()
    (change,) = [c for c in summary["es"]["rewrites"] if c["line"] == 3]
    assert change["before"] == long_line and change["before_fit"].startswith("overflow")
    assert change["after"] == "Vale." and change["after_fit"] == "fits" and change["max_chars"] < len(long_line)
    prompt = next(r["body"]["messages"] for r in llm.requests if long_line in r["body"]["messages"][1]["content"])
    assert f"at most {change['max_chars']} characters" in prompt[0]["content"]
    with open(root / "out" / "review" / "ep1.es.review.csv", encoding="utf-8-sig", newline="") as handle:
        row = list(csv.DictReader(handle))[2]
    assert (row["translation"], row["suggestion"], row["suggestion_fit"]) == (long_line, "Vale.", "fits")
