"""reproduce: rebuild a registered version from its lineage alone and compare it with the
registry's copy.

The lineage is what `raincast.steps.train.lineage_tags` wrote on the version's MLflow run:
the code revision (``git_sha``), the processed data (``dvc_data_md5``, an object of the DVC
cache or remote), the train section of params.yaml (``params_hash``) and the split windows.
Each is checked before anything is fitted, and a check that fails refuses with a
`ReproduceError` saying what differs. Then the split and train cores run again on the
recovered data and the new booster is compared with the registered one: equal bytes and
threshold are ``identical``; equal test metrics (within `METRIC_TOLERANCE`) ``equivalent``;
anything else a ``mismatch``.

Code revision, in short: in a git checkout HEAD must be the recorded commit, ``src/``,
``params.yaml`` and ``dvc.yaml`` clean, and the running raincast package the checkout's
``src/raincast``. A version trained outside git records ``unknown`` and one trained from
uncommitted changes ``<sha>-dirty``: neither can be checked, so both (and any project that
is not a git checkout) need ``allow_dirty``, and the report says what was not verified.

XGBoost's hist method with a fixed seed gave byte-identical boosters for nthread 1, 2 and 4
(XGBoost 3.2, weatherAUS, the committed params), so ``identical`` is what to expect with the
same XGBoost build; ``equivalent`` leaves room for another build or CPU.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import raincast
from raincast import catalog
from raincast.params import Params, load_params, params_hash
from raincast.settings import Settings

if TYPE_CHECKING:
    import pandas as pd

    from raincast.models.train import FittedModel

log = logging.getLogger(__name__)

#: The lineage tags reproduce needs: code, data, params, and the split windows.
WINDOW_TAGS = {"train": "train_window", "validation": "validation_window", "test": "test_window"}
REQUIRED_TAGS = ("git_sha", "dvc_data_md5", "params_hash", *WINDOW_TAGS.values())
#: The paths whose changes make another model: the code, and the pipeline's definition.
CODE_PATHS = ("src", "params.yaml", "dvc.yaml")
#: The test metrics two boosters with different bytes must agree on to be "equivalent".
COMPARED_METRICS = ("roc_auc", "f1")
METRIC_TOLERANCE = 1e-6
#: What `tracking.git_sha` records outside git, and the suffix of an uncommitted tree.
UNKNOWN_SHA = "unknown"
DIRTY_SUFFIX = "-dirty"

Verdict = Literal["identical", "equivalent", "mismatch"]


class ReproduceError(RuntimeError):
    """The version cannot be rebuilt as recorded; the message says what is missing or differs."""


class UnknownVersionError(ReproduceError):
    """The registry has no such version (or its run is gone)."""


class LineageMissingError(ReproduceError):
    """The version's run lacks lineage tags; the message names each."""


class CodeRevisionError(ReproduceError):
    """The code is not (or cannot be shown to be) the recorded revision; ``allow_dirty``
    goes on anyway."""


class DataUnavailableError(ReproduceError):
    """Neither the DVC cache nor the remote has the recorded data object (or it is corrupt)."""


class ParamsMismatchError(ReproduceError):
    """No params.yaml at hand has the recorded hash of the train section."""


class WindowsMismatchError(ReproduceError):
    """The split of the recovered data does not give the recorded windows."""


@dataclass(frozen=True)
class Lineage:
    """What a registered version was built from, as its run's tags record it."""

    run_id: str
    git_sha: str
    data_md5: str
    params_hash: str
    #: "start..end" per slice (train, validation, test).
    windows: dict[str, str]


@dataclass(frozen=True)
class ReproduceReport:
    model_name: str
    version: str
    run_id: str
    verdict: Verdict
    #: Why this verdict (bytes, threshold, metric differences).
    reason: str
    data_md5: str
    #: Where the data came from: "cache" or "remote <name>".
    data_from: str
    #: Which params.yaml had the recorded train hash.
    params_from: str
    #: What differs in the code, or could not be checked (empty: HEAD is the recorded commit
    #: and the tree is clean); only ever non-empty with ``allow_dirty``.
    code_differences: list[str]
    windows: dict[str, str]
    registered_metrics: dict[str, float]
    reproduced_metrics: dict[str, float]
    tolerance: float = METRIC_TOLERANCE
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        """True for ``identical`` and ``equivalent``."""
        return self.verdict != "mismatch"

    def summary(self) -> str:
        """One line for the CLI."""
        code = "; code not verified (allowed): " + "; ".join(self.code_differences)
        return (
            f"{self.model_name} version {self.version}: {self.verdict.upper()} ({self.reason}); "
            f"data {self.data_md5} from {self.data_from}, params from {self.params_from}"
            f"{code if self.code_differences else ''}"
        )


# --- lineage -----------------------------------------------------------------------------------


def lineage_from_tags(tags: dict[str, str], run_id: str, version: str) -> Lineage:
    """The lineage in a run's tags; refuses naming every required tag that is absent."""
    missing = [t for t in REQUIRED_TAGS if not tags.get(t)]
    if missing:
        raise LineageMissingError(
            f"version {version} (run {run_id}) lacks the lineage tag(s) {', '.join(missing)}: "
            "it cannot be rebuilt from its lineage"
        )
    return Lineage(
        run_id=run_id,
        git_sha=tags["git_sha"],
        data_md5=tags["dvc_data_md5"],
        params_hash=tags["params_hash"],
        windows={part: tags[tag] for part, tag in WINDOW_TAGS.items()},
    )


def read_lineage(client: Any, model_name: str, version: str) -> Lineage:
    """The lineage of a registered version, from its MLflow run's tags."""
    from mlflow.exceptions import MlflowException

    try:
        run_id = client.get_model_version(model_name, version).run_id
    except MlflowException as err:
        raise UnknownVersionError(f"{model_name} has no version {version}: {err}") from None
    if not run_id:
        raise LineageMissingError(
            f"version {version} of {model_name} was not registered from a run: no lineage"
        )
    try:
        tags = client.get_run(run_id).data.tags
    except MlflowException as err:
        raise UnknownVersionError(f"the run {run_id} of version {version} is gone: {err}") from None
    return lineage_from_tags(dict(tags), run_id, version)


# --- code revision ---------------------------------------------------------------------------


def _git(project_dir: Path, *args: str) -> str | None:
    """A git command's output in ``project_dir``; None when git fails or is absent."""
    try:
        proc = subprocess.run(
            ["git", *args], cwd=project_dir, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return proc.stdout


def code_differences(project_dir: Path, recorded_sha: str) -> list[str]:
    """What keeps the code in ``project_dir`` from being shown to be ``recorded_sha``:
    empty when HEAD is that commit and `CODE_PATHS` have no change (untracked files count)."""
    if recorded_sha == UNKNOWN_SHA:
        return ["the version was trained outside a git checkout (git_sha 'unknown')"]
    commit = recorded_sha.removesuffix(DIRTY_SUFFIX)
    found = []
    if commit != recorded_sha:
        found.append(f"the version was trained from uncommitted changes on {commit}")
    if (_git(project_dir, "rev-parse", "--is-inside-work-tree") or "").strip() != "true":
        return [*found, f"{project_dir.name} is not a git checkout: cannot compare with {commit}"]
    head = (_git(project_dir, "rev-parse", "HEAD") or "").strip()
    if head != commit:
        if _git(project_dir, "cat-file", "-e", f"{commit}^{{commit}}") is None:
            found.append(f"HEAD is {head or 'no commit'}; {commit} is not in this clone")
        else:
            changed = _git(project_dir, "diff", "--name-only", commit, "--", *CODE_PATHS) or ""
            paths = ", ".join(changed.split()) or f"none of {', '.join(CODE_PATHS)}"
            found.append(f"HEAD is {head or 'no commit'}, not {commit} (differs in: {paths})")
    status = _git(project_dir, "status", "--porcelain", "--", *CODE_PATHS) or ""
    dirty = [line[3:] for line in status.splitlines() if line.strip()]
    if dirty:
        found.append(f"uncommitted changes in {', '.join(dirty)}")
    return found


def check_code(
    project_dir: Path, recorded_sha: str, allow_dirty: bool, package_dir: Path | None = None
) -> list[str]:
    """`code_differences`, refused with `CodeRevisionError` unless ``allow_dirty``. With
    ``package_dir`` (the raincast package that will fit), it must be the project's
    ``src/raincast``: the checked checkout is otherwise not the code that runs."""
    found = code_differences(project_dir, recorded_sha)
    expected = (project_dir / "src" / "raincast").resolve()
    if package_dir is not None and package_dir.resolve() != expected:
        found.append(f"the raincast package that runs is {package_dir}, not {expected}")
    if found and not allow_dirty:
        raise CodeRevisionError(
            f"the code is not shown to be the one trained at {recorded_sha}: {'; '.join(found)} "
            "(check out that commit, or pass allow_dirty / --allow-dirty to go on anyway)"
        )
    return found


# --- params ----------------------------------------------------------------------------------


def recover_params(project_dir: Path, recorded_sha: str, recorded_hash: str) -> tuple[Params, str]:
    """The params.yaml whose train section hashes to ``recorded_hash``: the one committed at
    the recorded commit when git has it, else the project's own. Refuses naming each
    candidate's hash."""
    candidates: list[tuple[str, Path]] = []
    with tempfile.TemporaryDirectory(prefix="raincast-params-") as tmp:
        commit = recorded_sha.removesuffix(DIRTY_SUFFIX)
        if commit != UNKNOWN_SHA:
            committed = _git(project_dir, "show", f"{commit}:./params.yaml")
            if committed is not None:
                path = Path(tmp) / "params.yaml"
                path.write_text(committed)
                candidates.append((f"params.yaml at {commit}", path))
        candidates.append(("params.yaml", project_dir / "params.yaml"))
        tried = []
        for label, path in candidates:
            params = load_params(path)
            found = params_hash(params.train)
            if found == recorded_hash:
                return params, label
            tried.append(f"{label} has {found}")
    raise ParamsMismatchError(
        f"the version was trained with train params hash {recorded_hash}; "
        f"{'; '.join(tried)} (restore the train section it was trained with)"
    )


# --- data ------------------------------------------------------------------------------------


def recover_data(project_dir: Path, md5: str, dest: Path) -> str:
    """Copy the DVC object ``md5`` to ``dest`` from the project's cache or, failing that, its
    default remote (DVC 3 keeps objects under ``files/md5/<2>/<30>``; DVC 2's under
    ``<2>/<30>`` are looked up too). Returns where it came from; the copy's md5 is checked."""
    from dvc.exceptions import DvcException, NotDvcRepoError
    from dvc.repo import Repo

    from raincast.models.tracking import file_md5

    dest.parent.mkdir(parents=True, exist_ok=True)
    looked = []
    try:
        repo = Repo(str(project_dir))
    except NotDvcRepoError:
        raise DataUnavailableError(
            f"{project_dir} is not a DVC project: cannot fetch data {md5}"
        ) from None
    with repo:
        odbs: list[tuple[str, Any]] = [("cache", repo.cache.local), ("cache", repo.cache.legacy)]
        try:
            name = repo.config["core"].get("remote") or "default"
            odbs += [
                (f"remote {name}", repo.cloud.get_remote_odb(None, "reproduce")),
                (
                    f"remote {name}",
                    repo.cloud.get_remote_odb(None, "reproduce", hash_name="md5-dos2unix"),
                ),
            ]
        except DvcException as err:
            looked.append(f"no usable DVC remote ({err})")
        for where, odb in odbs:
            try:
                if not odb.exists(md5):
                    continue
                odb.fs.get_file(odb.oid_to_path(md5), str(dest))
            except (DvcException, OSError) as err:
                looked.append(f"{where} failed: {err}")
                continue
            got = file_md5(dest)
            if got != md5:
                dest.unlink()
                raise DataUnavailableError(
                    f"the {where} object {md5} is corrupt (its md5 is {got})"
                ) from None
            return where
    detail = f" ({'; '.join(looked)})" if looked else ""
    raise DataUnavailableError(
        f"the remote no longer has data {md5} (nor has the DVC cache): the processed data "
        f"this version was trained on is gone{detail}"
    )


# --- rebuild and compare (pure cores) ----------------------------------------------------------


def rebuild(
    processed: pd.DataFrame, params: Params, recorded: dict[str, str], workdir: Path
) -> tuple[FittedModel, pd.DataFrame]:
    """Split ``processed`` as the split step does, refuse unless the windows are the
    ``recorded`` ones, and fit as the train step does. Returns the fit and the test slice.

    The slices go through parquet under ``workdir`` (`catalog.TRAIN`...), as between the
    split and train stages, so the fit sees the dtypes the pipeline's fit saw."""
    from raincast.models.train import fit
    from raincast.steps.split import split_by_time

    slices = split_by_time(processed, params.split)
    windows = {k: "..".join(v) for k, v in slices[3].as_dict().items()}
    differ = [
        f"{k} {windows[k]} (recorded {recorded[k]})" for k in recorded if windows[k] != recorded[k]
    ]
    if differ:
        raise WindowsMismatchError(
            f"the split of the recovered data gives other windows: {'; '.join(differ)} "
            "(the split section of params.yaml is not the one the version was trained with)"
        )
    artifacts = (catalog.TRAIN, catalog.VALIDATION, catalog.TEST)
    for artifact, part in zip(artifacts, slices[:3], strict=True):
        catalog.save_frame(workdir, artifact, part)
    train, validation, test = (catalog.load_frame(workdir, a) for a in artifacts)
    return fit(train, validation, params.train), test


def compare(
    registered: bytes,
    registered_threshold: float,
    reproduced: bytes,
    reproduced_threshold: float,
    test: pd.DataFrame,
    tolerance: float = METRIC_TOLERANCE,
) -> tuple[Verdict, str, dict[str, float], dict[str, float]]:
    """Compare two saved boosters (UBJSON bytes, as `catalog.BOOSTER`) and their thresholds:
    identical bytes and threshold, else test metrics (`COMPARED_METRICS`) within
    ``tolerance``. Returns the verdict, why, and both boosters' test metrics."""
    import xgboost as xgb

    from raincast.steps.evaluate import score_test_slice

    metrics = []
    for raw, threshold in ((registered, registered_threshold), (reproduced, reproduced_threshold)):
        booster = xgb.Booster()
        booster.load_model(bytearray(raw))
        metrics.append(score_test_slice(booster, test, threshold)[0])
    before, after = metrics
    if registered == reproduced and registered_threshold == reproduced_threshold:
        return "identical", "booster bytes and threshold are the registered ones", before, after
    what = "booster bytes" if registered != reproduced else "threshold"
    deltas = {k: abs(before[k] - after[k]) for k in COMPARED_METRICS}
    shown = ", ".join(
        f"{k} {before[k]:.6f} vs {after[k]:.6f} (diff {deltas[k]:.1e})" for k in COMPARED_METRICS
    )
    if all(d <= tolerance for d in deltas.values()):
        return "equivalent", f"{what} differ; test {shown}: within {tolerance:g}", before, after
    return "mismatch", f"{what} differ; test {shown}: beyond {tolerance:g}", before, after


# --- the edge --------------------------------------------------------------------------------


def reproduce(
    settings: Settings,
    version: str,
    allow_dirty: bool = False,
    tolerance: float = METRIC_TOLERANCE,
) -> ReproduceReport:
    """Rebuild registered ``version`` of ``settings.model_name`` from its lineage (code
    revision, DVC data object, params hash, split windows) and compare it with the
    registry's booster. Raises a `ReproduceError` subclass when the lineage cannot be met;
    a rebuilt model that differs is a report with verdict ``mismatch``, not an error."""
    import mlflow
    from mlflow import MlflowClient

    started = time.monotonic()
    timings: dict[str, float] = {}

    def lap(name: str, since: float) -> float:
        now = time.monotonic()
        timings[name] = round(now - since, 3)
        return now

    root = settings.project_dir
    name = settings.model_name
    client = MlflowClient(tracking_uri=settings.tracking_uri, registry_uri=settings.tracking_uri)
    lineage = read_lineage(client, name, version)
    differences = check_code(root, lineage.git_sha, allow_dirty, Path(raincast.__file__).parent)
    params, params_from = recover_params(root, lineage.git_sha, lineage.params_hash)
    t = lap("lineage", started)

    with tempfile.TemporaryDirectory(prefix="raincast-reproduce-") as tmp:
        work = Path(tmp)
        data_from = recover_data(root, lineage.data_md5, catalog.PROCESSED.at(work))
        log.info("version %s: data %s from %s", version, lineage.data_md5, data_from)
        t = lap("data", t)

        registered_dir = work / "registered"
        registered_dir.mkdir()
        uri = client.get_model_version_download_uri(name, version).rstrip("/")
        artifacts = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=f"{uri}/artifacts",
                dst_path=str(registered_dir),
                tracking_uri=settings.tracking_uri,
            )
        )
        booster_file = artifacts / catalog.BOOSTER.path.name
        meta_file = artifacts / catalog.MODEL_META.path.name
        if not booster_file.exists() or not meta_file.exists():
            raise ReproduceError(
                f"version {version}'s logged model has no {booster_file.name} / "
                f"{meta_file.name} under artifacts/: not a raincast model"
            )
        registered_threshold = float(json.loads(meta_file.read_text())["threshold"])
        t = lap("registered model", t)

        processed = catalog.load_frame(work, catalog.PROCESSED)
        fitted, test = rebuild(processed, params, lineage.windows, work)
        reproduced_file = catalog.BOOSTER.at(work)
        reproduced_file.parent.mkdir(parents=True, exist_ok=True)
        fitted.booster.save_model(reproduced_file)  # as the train step saves it
        t = lap("fit", t)

        verdict, reason, before, after = compare(
            booster_file.read_bytes(),
            registered_threshold,
            reproduced_file.read_bytes(),
            fitted.threshold,
            test,
            tolerance,
        )
        lap("compare", t)

    report = ReproduceReport(
        model_name=name,
        version=version,
        run_id=lineage.run_id,
        verdict=verdict,
        reason=reason,
        data_md5=lineage.data_md5,
        data_from=data_from,
        params_from=params_from,
        code_differences=differences,
        windows=lineage.windows,
        registered_metrics=before,
        reproduced_metrics=after,
        tolerance=tolerance,
        seconds=round(time.monotonic() - started, 3),
        timings=timings,
    )
    log.info("%s", report.summary())
    return report
