"""`raincast serve`: refuses a weak JWT secret before BentoML starts, and gives each port
its own BentoML home (`bentoml serve` empties the home's Prometheus folder as it starts,
which would wipe the metrics of another server sharing it)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from testbed.params_file import LIBRARY_DEFAULTS, write_params
from typer.testing import CliRunner

from raincast import cli
from raincast.cli import stack

runner = CliRunner()


class Exec(Exception):
    pass


@pytest.fixture
def execs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[list[str], str]]:
    """What `raincast serve` would exec, and the BentoML home it would run with."""
    calls: list[tuple[list[str], str]] = []

    def fake_exec(file: str, args: list[str]) -> None:
        calls.append((args, os.environ["BENTOML_HOME"]))
        raise Exec

    monkeypatch.setattr(stack.os, "execvp", fake_exec)
    monkeypatch.delenv("BENTOML_HOME", raising=False)
    monkeypatch.setenv("RAINCAST_HOME", str(tmp_path / "state"))
    monkeypatch.setenv("RAINCAST_JWT_SECRET", "s" * 48)
    monkeypatch.chdir(tmp_path)
    write_params(tmp_path, LIBRARY_DEFAULTS)
    return calls


def test_each_port_gets_its_own_bentoml_home(
    execs: list[tuple[list[str], str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for port in ("3101", "3102"):
        result = runner.invoke(cli.app, ["serve", "--port", port])
        assert isinstance(result.exception, Exec), result.output
        monkeypatch.delenv("BENTOML_HOME")  # as a fresh shell would start the next one
    (args1, home1), (args2, home2) = execs
    assert args1[-2:] == ["--port", "3101"] and args2[-2:] == ["--port", "3102"]
    assert home1 == str((tmp_path / "state" / "bentoml" / "3101").resolve())
    assert home2 == str((tmp_path / "state" / "bentoml" / "3102").resolve())


def test_a_bentoml_home_set_by_the_user_is_kept(
    execs: list[tuple[list[str], str]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BENTOML_HOME", str(tmp_path / "mine"))
    assert isinstance(runner.invoke(cli.app, ["serve"]).exception, Exec)
    assert execs[0][1] == str(tmp_path / "mine")


def test_a_weak_secret_stops_before_bentoml(
    execs: list[tuple[list[str], str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RAINCAST_JWT_SECRET", "short")
    result = runner.invoke(cli.app, ["serve"])
    assert result.exit_code == 1 and "RAINCAST_JWT_SECRET" in result.stderr
    assert execs == []
