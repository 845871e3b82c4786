import json
from pathlib import Path

from dubforge.core.manifest import manifest_json_schema, parse_manifest
from dubforge.core.reports import qc_json_schema

ROOT = Path(__file__).resolve().parents[1]


def test_example_manifest_parses():
    manifest = parse_manifest(ROOT / "manifests" / "example.yaml")
    assert [t.language for t in manifest.targets] == ["es", "pt-BR", "de"]
    assert manifest.target("de").voices["ben"].rate == 0.95
    assert manifest.mix.loudness == "ebu-r128"


def test_committed_qc_schema_matches_the_records():
    committed = json.loads((ROOT / "manifests" / "qc.schema.json").read_text())
    assert committed == qc_json_schema(), "run `make schema` to regenerate manifests/qc.schema.json"


def test_committed_schema_matches_the_models():
    committed = json.loads((ROOT / "manifests" / "schema.json").read_text())
    assert committed == manifest_json_schema(), "run `make schema` to regenerate manifests/schema.json"
