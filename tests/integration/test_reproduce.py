"""Reproduce a registered version from its lineage alone, in a tiny temporary project: the
processed data in a DVC cache and local remote, a version trained by the train step and
registered in the embedded MLflow; then each lineage check failing on its own."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import pandas as pd
import pytest
import xgboost as xgb
from mlflow import MlflowClient
from testbed.champion import labelled_rows
from testbed.params_file import LIBRARY_DEFAULTS, merged, write_params
from typer.testing import CliRunner

from raincast import catalog
from raincast.cli import app
from raincast.models.tracking import file_md5, git_sha
from raincast.params import load_params, params_hash
from raincast.pipeline import reproduce as rp
from raincast.settings import Settings
from raincast.steps import process, split, train

pytestmark = pytest.mark.slow
runner = CliRunner()

STATIONS = ("Sydney", "Perth", "Darwin")
#: Small and quick: 40 rounds at most, 60-day test and validation windows.
OVERRIDES = merged(
    LIBRARY_DEFAULTS,
    {
        "train": {"xgb": {"n_estimators": 40}},
        "split": {"test_days": 60, "validation_days": 60, "min_train_rows": 100},
    },
)


def _dvc(work: Path, *args: str) -> None:
    subprocess.run([str(Path(sys.executable).parent / "dvc"), *args], cwd=work, check=True)


def _settings(work: Path) -> Settings:
    return Settings(
        project_dir=work,
        home=work / "var",
        store_url=None,
        mlflow_tracking_uri=None,
        mlflow_artifact_root=None,
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DVC project (no git) whose processed data is cached and pushed, and version 1
    trained on it by the split and train steps."""
    work = tmp_path_factory.mktemp("reproduce")
    write_params(work, OVERRIDES)
    rows = labelled_rows(STATIONS, 7, date(2016, 1, 1), date(2017, 6, 25))
    catalog.save_frame(work, catalog.PROCESSED, process.labelled_rows(rows))
    _dvc(work, "init", "--no-scm", "-q")
    _dvc(work / ".dvc", "remote", "add", "-d", "local", "../var/dvc-remote")
    _dvc(work, "add", "-q", str(catalog.PROCESSED.path))
    _dvc(work, "push", "-q")
    settings, params = _settings(work), load_params(work / "params.yaml")
    with pytest.MonkeyPatch.context() as mp:
        # The version must record git_sha "unknown" even when the temp folder is in a repo.
        mp.setenv("GIT_CEILING_DIRECTORIES", str(work.parent))
        split.run(settings, params)
        assert train.run(settings, params)["model_version"] == "1"
    return work


def _objects(work: Path, md5: str) -> list[Path]:
    """The data object in the cache and in the remote (DVC 3 layout: files/md5/ab/cdef...)."""
    rel = Path("files", "md5", md5[:2], md5[2:])
    return [work / ".dvc" / "cache" / rel, work / "var" / "dvc-remote" / rel]


@contextmanager
def _moved_aside(paths: list[Path]) -> Iterator[None]:
    for p in paths:
        p.rename(p.with_suffix(".aside"))
    try:
        yield
    finally:
        for p in paths:
            p.with_suffix(".aside").rename(p)


@contextmanager
def _params_changed(work: Path, overrides: dict[str, object]) -> Iterator[None]:
    before = (work / "params.yaml").read_text()
    write_params(work, merged(OVERRIDES, overrides))
    try:
        yield
    finally:
        (work / "params.yaml").write_text(before)


def test_a_version_reproduces_identically_from_its_lineage(project: Path) -> None:
    settings = _settings(project)
    # Trained outside git: the code cannot be checked, so it takes allow_dirty.
    with pytest.raises(rp.CodeRevisionError, match=r"outside a git checkout.*allow-dirty"):
        rp.reproduce(settings, "1")
    report = rp.reproduce(settings, "1", allow_dirty=True)
    assert report.verdict == "identical" and report.ok, report.summary()
    assert report.data_md5 == file_md5(catalog.PROCESSED.at(project))
    assert report.data_from == "cache" and report.params_from == "params.yaml"
    unknown, elsewhere = report.code_differences  # this package is not the project's src/
    assert unknown == "the version was trained outside a git checkout (git_sha 'unknown')"
    assert elsewhere.startswith("the raincast package that runs is ")
    assert report.windows["test"] == "2017-04-26..2017-06-24"
    assert report.reproduced_metrics == report.registered_metrics
    assert "IDENTICAL" in report.summary() and "code not verified (allowed)" in report.summary()


def test_the_command_says_identical_or_refuses_in_one_line(project: Path) -> None:
    env = {"RAINCAST_PROJECT_DIR": str(project), "RAINCAST_HOME": str(project / "var")}
    refused = runner.invoke(app, ["reproduce", "1"], env=env)
    assert refused.exit_code == 1
    (line,) = [ln for ln in refused.output.splitlines() if ln.startswith("error:")]
    assert "outside a git checkout" in line and "--allow-dirty" in line
    ok = runner.invoke(app, ["reproduce", "1", "--allow-dirty"], env=env)
    assert ok.exit_code == 0, ok.output
    assert "IDENTICAL" in ok.output
    unknown = runner.invoke(app, ["reproduce", "99", "--allow-dirty"], env=env)
    assert unknown.exit_code == 1 and "99" in unknown.output


def test_data_gone_from_the_cache_comes_from_the_remote(project: Path) -> None:
    md5 = file_md5(catalog.PROCESSED.at(project))
    with _moved_aside(_objects(project, md5)[:1]):
        report = rp.reproduce(_settings(project), "1", allow_dirty=True)
    assert report.data_from == "remote local" and report.verdict == "identical"


def test_data_gone_from_cache_and_remote_is_refused(project: Path) -> None:
    md5 = file_md5(catalog.PROCESSED.at(project))
    with (
        _moved_aside(_objects(project, md5)),
        pytest.raises(rp.DataUnavailableError, match=f"the remote no longer has data {md5}"),
    ):
        rp.reproduce(_settings(project), "1", allow_dirty=True)


def test_changed_train_params_are_refused_with_both_hashes(project: Path) -> None:
    recorded = params_hash(load_params(project / "params.yaml").train)
    with _params_changed(project, {"train": {"seed": 43}}):
        now = params_hash(load_params(project / "params.yaml").train)
        with pytest.raises(rp.ParamsMismatchError, match=f"{recorded}.*params.yaml has {now}"):
            rp.reproduce(_settings(project), "1", allow_dirty=True)


def test_changed_split_params_are_refused_by_the_windows(project: Path) -> None:
    with (
        _params_changed(project, {"split": {"test_days": 30}}),
        pytest.raises(rp.WindowsMismatchError, match=r"test 2017-05-26\.\.2017-06-24"),
    ):
        rp.reproduce(_settings(project), "1", allow_dirty=True)


def test_a_missing_lineage_tag_is_refused_by_name(project: Path) -> None:
    settings = _settings(project)
    client = MlflowClient(tracking_uri=settings.tracking_uri)
    run_id = client.get_model_version(settings.model_name, "1").run_id
    md5 = client.get_run(run_id).data.tags["dvc_data_md5"]
    client.delete_tag(run_id, "dvc_data_md5")
    try:
        with pytest.raises(rp.LineageMissingError, match=r"lacks the lineage tag.*dvc_data_md5"):
            rp.reproduce(settings, "1", allow_dirty=True)
    finally:
        client.set_tag(run_id, "dvc_data_md5", md5)


def test_an_unknown_version_is_refused(project: Path) -> None:
    with pytest.raises(rp.UnknownVersionError, match="no version 99"):
        rp.reproduce(_settings(project), "99", allow_dirty=True)


def test_compare_tells_equivalent_from_mismatch(project: Path) -> None:
    """Other bytes, same trees (JSON instead of UBJSON): equivalent; fewer trees: mismatch."""
    booster = xgb.Booster()
    booster.load_model(catalog.BOOSTER.at(project))
    test = pd.read_parquet(catalog.TEST.at(project))
    ubj = bytes(booster.save_raw("ubj"))
    verdict, reason, _, _ = rp.compare(ubj, 0.3, bytes(booster.save_raw("json")), 0.3, test)
    assert verdict == "equivalent" and "booster bytes differ" in reason
    verdict, reason, before, after = rp.compare(ubj, 0.3, bytes(booster[:1].save_raw()), 0.3, test)
    assert verdict == "mismatch" and "beyond 1e-06" in reason
    assert before["roc_auc"] != after["roc_auc"]


# --- the code revision, in a git checkout (no model needed) -------------------------------------


def _git(work: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args]
    return subprocess.run(cmd, cwd=work, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A git checkout with src/, params.yaml and dvc.yaml committed."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "core.py").write_text("X = 1\n")
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    write_params(tmp_path, OVERRIDES)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-qm", "first")
    return tmp_path


def test_code_check_in_a_git_checkout(checkout: Path) -> None:
    sha = git_sha(checkout)
    assert rp.check_code(checkout, sha, allow_dirty=False) == []
    assert rp.check_code(checkout, sha, False, package_dir=checkout / "src" / "raincast") == []
    with pytest.raises(rp.CodeRevisionError, match="the raincast package that runs is /else"):
        rp.check_code(checkout, sha, False, package_dir=Path("/elsewhere/raincast"))
    (checkout / "src" / "core.py").write_text("X = 2\n")
    with pytest.raises(rp.CodeRevisionError, match=r"uncommitted changes in src/core\.py"):
        rp.check_code(checkout, sha, allow_dirty=False)
    _git(checkout, "commit", "-qam", "second")
    (found,) = rp.check_code(checkout, sha, allow_dirty=True)
    assert found.startswith("HEAD is ") and f"not {sha} (differs in: src/core.py)" in found
    assert "uncommitted changes on" in rp.check_code(checkout, f"{sha}-dirty", True)[0]
    assert "not in this clone" in rp.check_code(checkout, "0" * 40, True)[0]


def test_params_come_from_the_recorded_commit(checkout: Path) -> None:
    sha = git_sha(checkout)
    recorded = params_hash(load_params(checkout / "params.yaml").train)
    write_params(checkout, merged(OVERRIDES, {"train": {"seed": 43}}))
    params, where = rp.recover_params(checkout, sha, recorded)
    assert where == f"params.yaml at {sha}" and params.train.seed == 42
    with pytest.raises(rp.ParamsMismatchError, match=f"params.yaml at {sha} has {recorded}"):
        rp.recover_params(checkout, sha, "0" * 16)


def test_outside_git_the_code_cannot_be_checked(tmp_path: Path) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
        with pytest.raises(rp.CodeRevisionError, match="not a git checkout"):
            rp.check_code(tmp_path, "a" * 40, allow_dirty=False)
