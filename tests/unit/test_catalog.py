"""The catalog and dvc.yaml say the same: each stage's data inputs, outputs, metrics, plots
and params sections; and a step's missing input names the step that makes it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from raincast import catalog

REPO = Path(__file__).resolve().parents[2]


def _paths(entries: list[Any]) -> list[str]:
    """Paths of a dvc.yaml list whose items are a path or ``{path: options}``."""
    return [e if isinstance(e, str) else next(iter(e)) for e in entries]


def dvc_view(stage: dict[str, Any]) -> dict[str, Any]:
    """A dvc.yaml stage's data (deps that are not code), outputs by role, and params."""
    outs: dict[str, str] = {}
    for role, key in (("out", "outs"), ("metric", "metrics"), ("plot", "plots")):
        for entry in stage.get(key, []):
            path = entry if isinstance(entry, str) else next(iter(entry))
            options = {} if isinstance(entry, str) else entry[path] or {}
            cached = options.get("cache", role == "out")
            outs[path] = "uncached_out" if role == "out" and not cached else role
    return {
        "cmd": stage["cmd"],
        "reads": sorted(d for d in _paths(stage.get("deps", [])) if not d.startswith("src/")),
        "writes": outs,
        "params": sorted(_paths(stage.get("params", []))),
    }


def catalog_view(name: str, stage: catalog.Stage) -> dict[str, Any]:
    return {
        "cmd": f"raincast {name}",
        "reads": sorted(str(a.path) for a in stage.reads),
        "writes": {str(a.path): role for a, role in stage.writes},
        "params": sorted(stage.params),
    }


def mismatches(dvc: dict[str, Any]) -> list[str]:
    """What differs between ``dvc`` (a parsed dvc.yaml) and `catalog.STAGES`."""
    found = dvc.get("stages", {})
    problems = [f"{n}: in one place only" for n in sorted(set(found) ^ set(catalog.STAGES))]
    for name in catalog.STAGES.keys() & found.keys():
        ours, theirs = catalog_view(name, catalog.STAGES[name]), dvc_view(found[name])
        problems += [
            f"{name}.{key}: catalog {ours[key]} != dvc.yaml {theirs[key]}"
            for key in ours
            if ours[key] != theirs[key]
        ]
    return problems


def test_dvc_yaml_mirrors_the_catalog() -> None:
    assert mismatches(yaml.safe_load((REPO / "dvc.yaml").read_text())) == []


def test_the_plots_keep_their_axes() -> None:
    plots = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["evaluate"]["plots"]
    axes = {next(iter(p)): next(iter(p.values())) for p in plots}
    for artifact in (catalog.ROC, catalog.PR, catalog.CALIBRATION, catalog.IMPORTANCE):
        declared = axes[str(artifact.path)]
        assert {k: declared[k] for k in artifact.plot} == artifact.plot


def test_a_renamed_output_is_reported() -> None:
    dvc = yaml.safe_load((REPO / "dvc.yaml").read_text())
    dvc["stages"]["split"]["outs"][0] = "data/split/training.parquet"
    del dvc["stages"]["evaluate"]
    problems = mismatches(dvc)
    assert "evaluate: in one place only" in problems
    assert any(p.startswith("split.writes:") and "training.parquet" in p for p in problems)


def test_every_artifact_has_one_path_and_one_producer() -> None:
    artifacts = [v for v in vars(catalog).values() if isinstance(v, catalog.Artifact)]
    assert len({a.path for a in artifacts}) == len(artifacts)
    written = [a.name for stage in catalog.STAGES.values() for a, _ in stage.writes]
    assert len(written) == len(set(written))


def test_a_missing_input_names_the_step_that_makes_it(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"data/split/test.parquet .*raincast split"):
        catalog.load_frame(tmp_path, catalog.TEST)
    with pytest.raises(FileNotFoundError, match=r"store_manifest.json .*raincast validate"):
        catalog.load_json(tmp_path, catalog.MANIFEST)


def test_saved_artifacts_read_back(tmp_path: Path) -> None:
    frame = pd.DataFrame({"Date": ["2020-01-01"], "Location": ["Perth"]})
    catalog.save_frame(tmp_path, catalog.PROCESSED, frame)
    pd.testing.assert_frame_equal(catalog.load_frame(tmp_path, catalog.PROCESSED), frame)
    catalog.save_json(tmp_path, catalog.TEST_METRICS, {"f1": 0.5})
    assert catalog.load_json(tmp_path, catalog.TEST_METRICS) == {"f1": 0.5}
