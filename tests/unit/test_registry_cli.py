"""`raincast registry history`: the champion spans, then the decisions, from the store."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from testbed.params_file import LIBRARY_DEFAULTS, write_params
from typer.testing import CliRunner, Result

from raincast.cli import app
from raincast.data import store

runner = CliRunner()


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project folder with params.yaml and no store yet; no stray .env or RAINCAST_*."""
    for name in [k for k in os.environ if k.startswith("RAINCAST_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, LIBRARY_DEFAULTS)
    monkeypatch.setenv("RAINCAST_PROJECT_DIR", str(tmp_path))
    monkeypatch.setenv("RAINCAST_HOME", str(tmp_path / "var"))
    monkeypatch.setenv("RAINCAST_STORE_URL", f"sqlite:///{tmp_path / 'raincast.db'}")
    return tmp_path


def history() -> Result:
    return runner.invoke(app, ["registry", "history"])


def record(url: str, before: str | None, after: str | None, candidate: str, **kw: str) -> None:
    decision = {"action": "promote", "decision": "promoted" if after == candidate else "rejected"}
    store.record_decision(
        store.connect(url),
        model_name="rain-tomorrow",
        candidate_version=candidate,
        champion_before=before,
        champion_after=after,
        reasons="test",
        **{**decision, **kw},
    )


def test_no_decision_says_so(project: Path) -> None:
    res = history()
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == "no decisions recorded"


def test_spans_come_first_then_every_decision(project: Path) -> None:
    url = f"sqlite:///{project / 'raincast.db'}"
    record(url, None, "1", "1")
    record(url, "1", "1", "2")  # rejected: no new span
    record(url, "1", "3", "3")
    record(url, "3", "1", "1", action="rollback", decision="moved")
    res = history()
    assert res.exit_code == 0, res.output
    head, decisions = res.stdout.split("\ndecisions\n")
    lines = head.splitlines()
    assert lines[0] == "champion spans (UTC)"
    assert lines[1].split() == ["version", "from", "to", "decided_by"]
    rows = [line.split() for line in lines[2:]]
    # version, from (date, time), to (date, time | now), decided_by
    assert [(r[0], r[-1]) for r in rows] == [
        ("1", "promote/promoted"),
        ("3", "promote/promoted"),
        ("1", "rollback/moved"),
    ]
    assert rows[-1][-2] == "now" and rows[0][-2] != "now"
    assert rows[0][3:5] == rows[1][1:3]  # one span ends where the next one starts
    assert len(decisions.strip().splitlines()) == 1 + 4  # header + every decision
    assert "rejected" in decisions


def test_an_unreadable_store_is_one_error_line(project: Path) -> None:
    (project / "raincast.db").write_bytes(b"this is not a database" * 100)
    res = history()
    assert res.exit_code == 1
    assert "Traceback" not in res.output
    assert res.stderr.startswith("error: the store at sqlite:///")
    assert "RAINCAST_STORE_URL" in res.stderr
