"""A Portuguese source with no script (speech made by the Kokoro voice), language left to detection, dubbed
into English through the CLI: the transcript, the detected language and the meaning of the dub are checked."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import yaml

from dubforge.core.textscore import error_rates, normalise
from dubforge.media.audio import read_wav, resample, write_wav

SENTENCES = [
    "A padaria abre às sete horas da manhã.",
    "Meu irmão comprou um carro novo ontem.",
    "Nós vamos viajar para a praia no sábado.",
]
MEANING = ["bakery", "seven", "brother", "car", "beach", "saturday"]  # what the English must carry
RATE = 48_000


@pytest.fixture(scope="module")
def project(tmp_path_factory, prefect_api):
    import imageio_ffmpeg

    from dubforge.lipsync.testmedia import carphone_path
    from dubforge.models.kokoro_tts import KokoroSynthesizer

    root = tmp_path_factory.mktemp("pt-source")
    voice = KokoroSynthesizer("pt-BR")
    track = [np.zeros(RATE // 2, np.float32)]
    for i, sentence in enumerate(SENTENCES):
        audio, rate = read_wav(voice.synthesize(sentence, root / f"line{i}.wav").wav)
        track += [resample(audio, rate, RATE)[:, 0] * 0.5, np.zeros(RATE, np.float32)]
    write_wav(root / "speech.wav", np.concatenate(track)[:, None], RATE)
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-v", "error", "-stream_loop", "-1", "-i", str(carphone_path()),
                    "-i", str(root / "speech.wav"), "-shortest", "-c:v", "libx264", "-preset", "ultrafast",
                    "-c:a", "aac", str(root / "entrevista.mp4")], check=True)
    (root / "project.yaml").write_text(yaml.safe_dump({
        "version": 1, "project": "entrevista", "source": {"video": "entrevista.mp4", "language": "auto"},
        "targets": [{"language": "en", "translation": {"from": "machine"}}],
        "outputs": {"dir": "out", "master": False},
    }))
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    result = subprocess.run([sys.executable, "-m", "dubforge", "run", str(root / "project.yaml")],
                            capture_output=True, text=True, env=env, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    (root / "terminal.txt").write_text(result.stdout)
    return root


def test_language_detected_and_transcribed(project):
    report = json.loads((project / "out" / "report.json").read_text())
    assert report["source"]["language"] == "pt" and report["source"]["language_probability"] > 0.5
    assert report["languages"]["en"]["status"] == "completed"
    terminal = (project / "terminal.txt").read_text()
    assert "Source language detected: pt" in terminal
    with open(project / "out" / "en" / "entrevista.en.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    heard = " ".join(row["transcription"] for row in rows)
    _, cer = error_rates(" ".join(SENTENCES), heard, "pt")
    assert cer <= 0.15, heard


def test_english_dub_carries_the_meaning(project):
    with open(project / "out" / "en" / "entrevista.en.csv", newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    translated = normalise(" ".join(row["translation"] for row in rows), "en").split()
    assert all(word in translated for word in MEANING), translated
    # and the delivered English audio says it: heard back by Whisper base
    qc = json.loads((project / "out" / "en" / "qc.json").read_text())
    heard = normalise(" ".join(line["heard"] for line in qc["segments"]), "en").split()
    assert sum(word in heard for word in MEANING) >= 5, heard
    assert qc["back_transcription"]["median_cer"] < 0.15 and not qc["back_transcription"]["flagged"]
    assert qc["back_transcription"]["heard"] == "mix" and qc["back_transcription"]["mix_residual_db"] < -20
    assert {row["flagged"] for row in rows} == {"no"} and all(row["heard_back"] for row in rows)
