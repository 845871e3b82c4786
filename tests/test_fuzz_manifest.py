"""Manifest fuzzing: random YAML trees and random mutations of manifests/example.yaml give exit 0 or 2 with a
message, never a traceback; validation writes nothing, and a plan it accepts never writes outside its folder."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dubforge.cli import app
from dubforge.core.errors import InputError
from dubforge.core.plan import make_plan
from dubforge.media.audio import write_wav
from tests.test_ingest import make_video, tone

EXAMPLE = Path(__file__).resolve().parents[1] / "manifests" / "example.yaml"
runner = CliRunner()

scalars = (st.none() | st.booleans() | st.integers(-10**6, 10**6) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=30) | st.sampled_from(["..", "../x", "/etc/passwd", "-x", "media/interview.mp4", "auto",
                                                     "es", "xx", "file", "machine", "", " ", "\x00", "out/../..", "~"]))
trees = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4)
                     | st.dictionaries(st.text(max_size=12) | st.integers(), inner, max_size=4), max_leaves=20)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """The media, scripts and folder layout example.yaml names, so the unmutated example validates."""
    root = tmp_path_factory.mktemp("fuzz")
    (root / "media").mkdir()
    (root / "scripts").mkdir()
    make_video(root / "media" / "interview.mp4", seconds=4.0, size=(64, 48), audio=tone(4.0, 48_000), language="eng")
    write_wav(root / "media" / "me.wav", tone(4.0, 48_000, 220.0, level=0.05), 48_000)
    (root / "scripts" / "interview.es.srt").write_text("1\n00:00:00,500 --> 00:00:02,000\nHola.\n")
    (root / "scripts" / "interview.de.csv").write_text(
        "speaker,start_time,end_time,transcription,translation\nanna,0.5,1.5,Hello,Hallo\nben,2.0,3.0,Bye,Tschüss\n")
    return root


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


def check(project: Path, text: str) -> int:
    path = project / "fuzzed.yaml"
    path.write_text(text, encoding="utf-8")
    before = listing(project)
    result = runner.invoke(app, ["validate", str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), (text, result.output)
    assert result.exit_code in (0, 2), (text, result.output)
    assert "Traceback" not in result.output
    assert listing(project) == before, text  # validation writes nothing
    if result.exit_code == 0:
        try:
            plan = make_plan(path)
        except InputError:
            pytest.fail(f"validate accepted what make_plan refuses: {text}")
        assert plan.out_dir.resolve().is_relative_to(project.resolve()) and plan.out_dir.resolve() != project.resolve()
    else:
        assert "Invalid input" in result.output, result.output
    return result.exit_code


def test_the_example_is_valid(project):
    assert check(project, EXAMPLE.read_text()) == 0


EDGES = [  # found by fuzzing (NUL crashed path handling) or chosen by hand
    ("source", "video", "\x00"), ("source", "script", "a\x00b"), ("outputs", "dir", "out\x00"),
    ("outputs", "dir", ""), ("outputs", "dir", "."), ("source", "video", "media"), ("source", "language", "\x00"),
    ("source", "audio_stream", -1), ("source", "audio_stream", 7), ("source", "music_effects", "scripts/interview.es.srt"),
    ("mix", "loudness", None), ("targets", 0, {"language": "es", "translation": {"from": "file", "path": "\x00"}}),
]


@pytest.mark.parametrize("edge", EDGES, ids=[repr(e[-1])[:20] for e in EDGES])
def test_edge_cases(project, edge):
    data = yaml.safe_load(EXAMPLE.read_text())
    *parents, last, value = edge
    node = data
    for key in parents:
        node = node[key]
    node[last] = value
    assert check(project, yaml.safe_dump(data, allow_unicode=True)) == 2


def _paths(node, prefix=()):
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _paths(value, (*prefix, index))


@st.composite
def mutations(draw):
    data = copy.deepcopy(yaml.safe_load(EXAMPLE.read_text()))
    for _ in range(draw(st.integers(1, 3))):
        where = draw(st.sampled_from(list(_paths(data))[1:]))
        *parents, last = where
        node = data
        for key in parents:
            node = node[key]
        action = draw(st.sampled_from(["replace", "delete", "add"]))
        if action == "replace":
            node[last] = draw(trees)
        elif action == "delete":
            del node[last]
        elif isinstance(node, dict):
            node[draw(st.text(max_size=10))] = draw(trees)
        else:
            node.append(draw(trees))
        if not isinstance(data, dict) or not data:
            break
    return yaml.safe_dump(data, allow_unicode=True)


FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(text=mutations())
def test_mutated_example(project, text):
    check(project, text)


@FUZZ
@given(tree=trees)
def test_random_yaml_tree(project, tree):
    check(project, yaml.safe_dump(tree, allow_unicode=True))


@FUZZ
@given(text=st.text(max_size=200))
def test_random_text(project, text):
    check(project, text)
