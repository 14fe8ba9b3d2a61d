"""`raincast promote` (steps.promote.run) through a real embedded registry: each model is
loaded once, and what the gate decided (or, in dry_run / off, would have decided) lands
in the alias, the version's tags and the decision history."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import mlflow.pyfunc
import pytest
from mlflow import MlflowClient

from raincast import catalog
from raincast.data import store
from raincast.params import PromoteParams
from raincast.settings import Settings
from raincast.steps import promote as promote_step
from tests.helpers import train_small_model

STATIONS = ("Darwin", "Perth", "Sydney", "Hobart")
#: The synthetic test slice has ~180 rows per station: let the station guard count them.
RULE = PromoteParams(significance="bootstrap", station_min_rows=100)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str]:
    """A registry with a one-tree champion (version 1) and a 20-tree challenger (version 2),
    and the validation slice as the test slice."""
    root = tmp_path_factory.mktemp("promote")
    settings = Settings(project_dir=root, home=root / "var")
    champion = train_small_model(settings, STATIONS, seed=3, n_estimators=1)
    challenger = train_small_model(settings, STATIONS, seed=3, n_estimators=20, champion=False)
    catalog.save_frame(root, catalog.TEST, catalog.load_frame(root, catalog.VALIDATION))
    return root, champion, challenger


@pytest.fixture
def settings(project: tuple[Path, str, str], tmp_path: Path) -> Settings:
    """Shared registry reset to version 1 as champion and version 2 undecided; a private
    decision history."""
    root, champion, challenger = project
    s = Settings(project_dir=root, home=root / "var", store_url=f"sqlite:///{tmp_path}/s.db")
    client = _client(s)
    client.set_registered_model_alias(s.model_name, "champion", champion)
    for key in client.get_model_version(s.model_name, challenger).tags:
        if key.startswith("promotion."):
            client.delete_model_version_tag(s.model_name, challenger, key)
    return s


@pytest.fixture
def loads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The model URIs MLflow loads during the test."""
    seen: list[str] = []
    real = mlflow.pyfunc.load_model

    def counting(uri: str, *args: Any, **kwargs: Any) -> Any:
        seen.append(uri)
        return real(uri, *args, **kwargs)

    monkeypatch.setattr(mlflow.pyfunc, "load_model", counting)
    return seen


def _client(s: Settings) -> MlflowClient:
    return MlflowClient(tracking_uri=s.tracking_uri, registry_uri=s.tracking_uri)


def _recorded(s: Settings, version: str) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The champion alias, the version's promotion tags and its history row."""
    client = _client(s)
    champion = str(client.get_model_version_by_alias(s.model_name, "champion").version)
    tags = client.get_model_version(s.model_name, version).tags
    (row,) = store.read_history(store.connect(s.raw_store_url), s.model_name).to_dict("records")
    return champion, tags, row


def test_enforce_scores_each_model_once_and_records_the_intervals(
    project: tuple[Path, str, str], settings: Settings, loads: list[str]
) -> None:
    _, champion, challenger = project
    out = promote_step.run(settings, RULE, challenger)
    d = out.decision
    assert d is not None and out.candidate is not None and out.champion_before is not None
    assert sorted(loads) == sorted(
        f"models:/{settings.model_name}/{v}" for v in (champion, challenger)
    )
    alias, tags, row = _recorded(settings, challenger)
    assert alias == (challenger if d.promote else champion)
    assert d.gate == "enforce" and d.label in {"promoted", "rejected"}
    assert tags["promotion.decision"] == row["decision"] == d.label
    assert tags["promotion.gate"] == "enforce"
    assert d.f1_gain is not None and d.auc_gain is not None
    assert tags["promotion.f1_gain_ci"] == str(d.f1_gain)
    assert tags["promotion.auc_gain_ci"] == str(d.auc_gain)
    assert f"F1 gain {d.f1_gain}" in row["reasons"]
    assert d.stations_checked == len(STATIONS) == int(tags["promotion.stations_checked"])
    extra = json.loads(row["extra"])
    assert extra["gate"] == "enforce" and extra["f1_gain"]["low"] == pytest.approx(d.f1_gain.low)


def test_enforce_keeps_the_champion_when_the_rule_fails(
    project: tuple[Path, str, str], settings: Settings
) -> None:
    _, champion, challenger = project
    strict = RULE.model_copy(update={"f1_margin": 0.9})
    out = promote_step.run(settings, strict, challenger)
    assert out.decision is not None and not out.decision.promote
    alias, tags, row = _recorded(settings, challenger)
    assert alias == champion == row["champion_after"]
    assert row["decision"] == "rejected" and tags["promotion.gate_verdict"] == "reject"


def test_dry_run_promotes_and_records_the_would_be_rejection(
    project: tuple[Path, str, str], settings: Settings
) -> None:
    _, champion, challenger = project
    dry = RULE.model_copy(update={"f1_margin": 0.9, "gate": "dry_run"})
    out = promote_step.run(settings, dry, challenger)
    assert out.decision is not None and out.decision.promote
    alias, tags, row = _recorded(settings, challenger)
    assert alias == challenger == row["champion_after"] and row["champion_before"] == champion
    assert row["decision"] == tags["promotion.decision"] == "promoted-dry-run"
    assert row["reasons"].startswith("dry run: would have rejected")
    assert "needs >= 0.9): not enough" in row["reasons"]
    assert tags["promotion.gate"] == "dry_run" and tags["promotion.gate_verdict"] == "reject"
    assert "promotion.f1_gain_ci" in tags  # the checks ran and are on record


def test_off_promotes_without_scoring_the_champion(
    project: tuple[Path, str, str], settings: Settings, loads: list[str]
) -> None:
    _, champion, challenger = project
    off = RULE.model_copy(update={"f1_margin": 0.9, "gate": "off"})
    out = promote_step.run(settings, off, challenger)
    assert out.decision is not None and out.decision.promote and out.champion_before is None
    assert loads == [f"models:/{settings.model_name}/{challenger}"]
    alias, tags, row = _recorded(settings, challenger)
    assert alias == challenger and row["champion_before"] == champion
    assert row["decision"] == "promoted-no-gate" and row["champion_f1"] is None
    assert row["reasons"].startswith("gate off (promote.gate: off)")
    assert tags["promotion.gate"] == "off" and tags["promotion.gate_verdict"] == "not run"
