"""Fast checks of the service pieces that need no server: exposure guard, inbox hashing and records."""

from __future__ import annotations

import pytest

from dubforge.core import inbox as box
from dubforge.service.stack import StackConfig, base_env, check_exposure


def test_server_is_not_exposed_without_auth():
    check_exposure("127.0.0.1", {})
    with pytest.raises(RuntimeError, match="PREFECT_SERVER_API_AUTH_STRING"):
        check_exposure("0.0.0.0", {})
    check_exposure("0.0.0.0", {"PREFECT_SERVER_API_AUTH_STRING": "team:secret"})
    assert StackConfig(home=".").host == "127.0.0.1"


def test_workers_get_the_client_auth_string(tmp_path, monkeypatch):
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "team:secret")
    monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)
    env = base_env(StackConfig(home=tmp_path, port=4321), None)
    assert env["PREFECT_API_AUTH_STRING"] == "team:secret"
    assert env["PREFECT_API_URL"] == "http://127.0.0.1:4321/api"
    assert "PREFECT_API_DATABASE_CONNECTION_URL" not in env


def test_inbox_records_follow_content(tmp_path):
    (tmp_path / "a.yaml").write_text("project: a\n")
    (tmp_path / ".hidden.yaml").write_text("x: 1\n")
    (tmp_path / "notes.txt").write_text("not a manifest\n")
    [candidate] = box.candidates(tmp_path)
    assert candidate.changed and candidate.record is None
    box.record(tmp_path, candidate, {"status": "submitted", "flow_run_id": "run-1"})
    [again] = box.candidates(tmp_path)
    assert not again.changed
    (tmp_path / "a.yaml").write_text("project: a\ntargets: []\n")
    [edited] = box.candidates(tmp_path)
    assert edited.changed
    entry = box.record(tmp_path, edited, {"status": "submitted", "flow_run_id": "run-2"})
    assert entry["history"][0]["flow_run_id"] == "run-1" and entry["flow_run_id"] == "run-2"
    assert box.read_record(tmp_path, tmp_path / "a.yaml") == entry


def test_manifest_schedule(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("project: m\nschedule: '0 2 * * *'\n")
    assert box.manifest_schedule(path) == {"cron": "0 2 * * *", "timezone": "UTC"}
    path.write_text("project: m\nschedule: {cron: '5 1 * * 1', timezone: Europe/Paris}\n")
    assert box.manifest_schedule(path) == {"cron": "5 1 * * 1", "timezone": "Europe/Paris"}
    path.write_text("project: m\n")
    assert box.manifest_schedule(path) is None
    path.write_text("project: m\nschedule: [1]\n")
    with pytest.raises(ValueError, match="schedule"):
        box.manifest_schedule(path)
