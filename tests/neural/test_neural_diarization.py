"""whisperx speaker diarization through the registry: a pyannote.audio 4 `speaker-diarization` pipeline folder
laid out like pyannote/speaker-diarization-community-1 (config.yaml with `$model/...` subfolders, PyanNet
segmentation and XVectorSincNet embedding checkpoints, VBx PLDA), randomly initialised in a temp dir.

Random weights cannot tell who spoke when, so the tests check the plumbing: the folder loads, every segment
carries a label that the pipeline produced, diarization leaves the timing alone, and the labels reach the
dubbing lines that pick per-speaker voices.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from dubforge.models.base import create_transcriber
from tests.neural.conftest import NEEDS

pytest.importorskip("torch", reason=NEEDS)
pytest.importorskip("whisperx", reason=NEEDS)
pytest.importorskip("pyannote.audio", reason=NEEDS)


LABEL = re.compile(r"SPEAKER_\d\d")
# pyannote's stats pooling over a local speaker active in a single frame (random segmentation)
pytestmark = pytest.mark.filterwarnings(r"ignore:std\(\):UserWarning")


def _save_checkpoint(model, path: Path) -> Path:
    """What pyannote's Model.from_pretrained loads: a Lightning checkpoint (state_dict, hyper_parameters) with
    pyannote's versions/architecture/specifications block, as pyannote's own wespeaker/convert.py writes it."""
    import lightning
    import torch

    checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                  "pytorch-lightning_version": lightning.__version__}
    model.on_save_checkpoint(checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


@pytest.fixture(scope="module")
def diarization_dir(tmp_path_factory) -> Path:
    import torch
    import yaml
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import XVectorSincNet
    from pyannote.audio.models.segmentation import PyanNet

    folder = tmp_path_factory.mktemp("pyannote-diarization")
    torch.manual_seed(0)
    # Powerset segmentation over 3 local speakers, at most 2 at once (community-1's layout), 5 s chunks.
    segmentation = PyanNet(lstm={"hidden_size": 16, "num_layers": 1}, linear={"hidden_size": 16, "num_layers": 1})
    segmentation.specifications = Specifications(
        problem=Problem.MONO_LABEL_CLASSIFICATION, resolution=Resolution.FRAME, duration=5.0, min_duration=5.0,
        classes=["speaker#1", "speaker#2", "speaker#3"], powerset_max_classes=2, permutation_invariant=True)
    segmentation.build()
    with torch.no_grad():  # powerset classes {}, {1}, {2}, {3}, {1,2}, {1,3}, {2,3}: always exactly one speaker
        segmentation.classifier.bias[[0, 4, 5, 6]] = -10.0
    _save_checkpoint(segmentation, folder / "segmentation" / "pytorch_model.bin")

    embedding = XVectorSincNet(dimension=32)
    embedding.specifications = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=5.0)
    _save_checkpoint(embedding, folder / "embedding" / "pytorch_model.bin")

    # PLDA for VBx clustering (pyannote.audio.core.plda): x-vector transform and a well-conditioned PLDA.
    rng = np.random.default_rng(0)
    dim, lda_dim = embedding.dimension, 16
    (folder / "plda").mkdir()
    np.savez(folder / "plda" / "xvec_transform.npz", mean1=0.01 * rng.standard_normal(dim),
             mean2=0.01 * rng.standard_normal(lda_dim), lda=np.linalg.qr(rng.standard_normal((dim, lda_dim)))[0])
    np.savez(folder / "plda" / "plda.npz", mu=np.zeros(lda_dim),
             tr=np.eye(lda_dim) + 0.01 * rng.standard_normal((lda_dim, lda_dim)), psi=np.linspace(2.0, 0.5, lda_dim))

    config = {
        "dependencies": {"pyannote.audio": "4.0.0"},
        "pipeline": {"name": "pyannote.audio.pipelines.SpeakerDiarization",
                     "params": {"segmentation": "$model/segmentation", "segmentation_batch_size": 8,
                                "embedding": "$model/embedding", "embedding_batch_size": 8,
                                "embedding_exclude_overlap": True, "plda": "$model/plda",
                                "clustering": "VBxClustering"}},
        "params": {"segmentation": {"min_duration_off": 0.0},
                   "clustering": {"threshold": 0.6, "Fa": 0.07, "Fb": 0.8}},
    }
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


@pytest.fixture(scope="module")
def dialogue(tmp_path_factory) -> Path:
    """Two voices taking turns (16 kHz mono): Piper as is, and Piper 20% lower and slower."""
    from dubforge.media.audio import read_wav, write_wav
    from tests.media import speak_english

    folder = tmp_path_factory.mktemp("dialogue")
    turns = []
    for i, (text, rate) in enumerate([("The quick brown fox jumps over the lazy dog.", 16_000),
                                      ("She sells sea shells by the sea shore.", 20_000),
                                      ("Maybe Bob prefers fluffy purple muffins.", 16_000)]):
        # spoken at `rate` and played at 16 kHz: a rate of 20 kHz lowers the pitch by a factor 0.8
        audio, _ = read_wav(speak_english(text, folder / f"turn{i}.wav", rate=rate, lead=0.3, tail=0.3).path)
        turns.append(audio)
    return write_wav(folder / "dialogue.wav", np.concatenate(turns), 16_000)


def test_pipeline_folder_loads_and_registers(tmp_path, diarization_dir):
    from dubforge.core import model_store
    from dubforge.models.whisperx_asr import check_diarization_model

    assert check_diarization_model(diarization_dir) == "pyannote pipeline SpeakerDiarization"
    models = tmp_path / "models.yaml"
    entry = model_store.add(models, "diarization", diarization_dir)
    assert entry.backend == "pyannote"
    (check,) = model_store.check(models)
    assert check.loads and check.sha_ok, check.message


def _dominant(segment, turns) -> str:
    """The label whose turns overlap the segment most (what whisperx's assign_word_speakers picks)."""
    overlap: dict[str, float] = {}
    for start, end, label in turns:
        overlap[label] = overlap.get(label, 0.0) + max(0.0, min(end, segment.end) - max(start, segment.start))
    return max(overlap, key=overlap.get)


def test_diarization_labels_every_segment(tmp_path, diarization_dir, dialogue, wav2vec2_dir, nltk_data):
    import torch
    from pyannote.audio import Pipeline
    from pyannote.audio.telemetry.metrics import is_metrics_enabled

    from dubforge.core import model_store
    from dubforge.media.audio import read_wav
    from dubforge.tasks.fit import _pick
    from dubforge.tasks.translate import translate_lines

    models = tmp_path / "models.yaml"
    model_store.add(models, "wav2vec2-en", wav2vec2_dir)
    model_store.add(models, "diarization", diarization_dir)
    options = {"align_models": {"en": "wav2vec2-en"}, "registry": models, "nltk_data": nltk_data}
    diarize = {"diarize": True, "diarization_model": "diarization", "num_speakers": 2}
    plain = create_transcriber("whisperx", **options).transcribe(dialogue, "en")
    asr = create_transcriber("whisperx", **diarize, **options)
    transcript = asr.transcribe(dialogue, "en")  # aligned: one segment per sentence
    whole = create_transcriber("whisperx", **diarize, registry=models).transcribe(dialogue, "en")  # unaligned
    assert not is_metrics_enabled(), "pyannote telemetry must stay off (dubforge runs offline)"

    # Diarization only adds labels: the segments, their words and timing are those of the plain run.
    assert transcript.backend == "whisperx" and len(transcript.segments) >= 2, transcript
    assert [s.model_copy(update={"speaker": "speaker 1"}) for s in transcript.segments] == list(plain.segments)
    assert {s.speaker for s in plain.segments} == {"speaker 1"}
    assert asr.fingerprint() != create_transcriber("whisperx", **options).fingerprint()

    # The pipeline's own answer on the same audio: each segment carries the label that overlaps it most.
    audio, rate = read_wav(dialogue)
    pipeline = Pipeline.from_pretrained(str(diarization_dir))
    output = pipeline({"waveform": torch.from_numpy(np.ascontiguousarray(audio[:, 0]))[None], "sample_rate": rate},
                      num_speakers=2)
    turns = [(t.start, t.end, label) for t, _, label in output.speaker_diarization.itertracks(yield_label=True)]
    labels = {label for _, _, label in turns}
    assert len(labels) == 2 and all(LABEL.fullmatch(label) for label in labels), labels  # num_speakers=2
    for seg in transcript.segments + whole.segments:
        assert LABEL.fullmatch(seg.speaker) and seg.speaker == _dominant(seg, turns), (seg, turns)

    # The labels flow into the dubbing lines, where each speaker's voice is picked.
    lines = translate_lines(transcript.segments, "en", "en", "none", {}).lines
    assert [line.speaker for line in lines] == [s.speaker for s in transcript.segments]
    voices = {label: object() for label in labels} | {"*": object()}
    assert all(_pick(voices, line.speaker) is voices[line.speaker] for line in lines)


def test_a_folder_that_is_no_pipeline_is_a_clear_error(tmp_path, dialogue):
    from dubforge.core.errors import StageError

    (tmp_path / "not-a-pipeline").mkdir()
    (tmp_path / "not-a-pipeline" / "config.yaml").write_text("pipeline: {name: nowhere.Pipeline}\n")
    asr = create_transcriber("whisperx", diarize=True, diarization_model=str(tmp_path / "not-a-pipeline"))
    with pytest.raises(StageError, match="not-a-pipeline"):
        asr.transcribe(dialogue, "en")
