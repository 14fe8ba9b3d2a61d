"""S3 goes away: in the middle of the model upload (the MLflow server's artifact store) and
during the cycle's `dvc push` (the DVC remote). The outage is a relay on loopback that is
cut and restored, so moto keeps its buckets: the retry sees the same S3.

Each case: a clear failure naming what was unreachable, no model version that could be
served half-uploaded, the champion unchanged, and a retry after S3 is back that succeeds.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import mlflow.pyfunc
import pandas as pd
import pytest
from mlflow import MlflowClient
from testbed.params_file import LIBRARY_DEFAULTS, merged, write_params

from raincast.data import store
from raincast.models.registry import alias_version, model_uri
from raincast.serving.model import PROBE_ROW
from raincast.settings import Settings
from tests.backends.conftest import DVC, LAST, Stack, make_project, run_raincast
from tests.backends.tcp_proxy import TcpProxy
from tests.helpers import train_small_model

pytestmark = pytest.mark.slow

STATIONS = ("Sydney", "Perth", "Darwin", "Hobart")
SMALL_TRAIN = {
    "train": {
        "seed": 3,
        "early_stopping_rounds": 5,
        "xgb": {"n_estimators": 20, "max_depth": 3, "n_jobs": 1},
    }
}
#: The booster file of the pyfunc model: uploaded after MLmodel and the other top-level
#: files (MLflow uploads a model folder file by file, top level first).
BOOSTER_KEY = b"/artifacts/model.ubj HTTP/1.1"


def _client(stack: Stack) -> MlflowClient:
    return MlflowClient(tracking_uri=stack.mlflow.url, registry_uri=stack.mlflow.url)


def _versions(stack: Stack, model: str) -> list[str]:
    found = _client(stack).search_model_versions(f"name='{model}'")
    return sorted((str(v.version) for v in found), key=int)


def _logged_models(client: MlflowClient, experiment: str) -> dict[str, str]:
    """Logged models of ``experiment``: id -> status."""
    exp = client.get_experiment_by_name(experiment)
    assert exp is not None
    found = client.search_logged_models(experiment_ids=[exp.experiment_id])
    return {m.model_id: str(m.status) for m in found}


def _artifact_files(stack: Stack, model_id: str) -> set[str]:
    """Files of a logged model in the artifact bucket, relative to its artifact folder."""
    marker = f"/models/{model_id}/artifacts/"
    keys = [k for k in stack.s3.keys("mlflow", "artifacts/") if marker in k]
    return {k.split(marker, 1)[1] for k in keys}


@pytest.mark.timeout(420)
def test_an_s3_outage_mid_upload_registers_nothing_and_the_retry_does(
    registry_up: Stack, tmp_path: Path
) -> None:
    stack, model = registry_up, "rain-s3-upload"
    settings = Settings(
        project_dir=tmp_path,
        home=tmp_path / "var",
        store_url=stack.new_db("upload"),
        mlflow_tracking_uri=stack.mlflow.url,
        model_name=model,
    )
    write_params(tmp_path, merged(LIBRARY_DEFAULTS, SMALL_TRAIN))
    champion = train_small_model(settings, STATIONS)  # version 1, champion and challenger
    client = _client(stack)
    before = _versions(stack, model)
    challenger = alias_version(client, model, "challenger")
    models_before = _logged_models(client, settings.experiment)
    env = stack.env(tmp_path, settings.raw_store_url, model)
    relay = stack.mlflow.s3_relay

    relay.trip_on(BOOSTER_KEY)  # S3 goes down as the booster's PUT reaches it
    down = run_raincast(tmp_path, env, "train", timeout=300)
    text = down.stdout + down.stderr
    assert relay.tripped.is_set(), "the upload never reached the booster: no outage happened"
    assert not relay.is_up
    assert down.returncode == 1, text[-3000:]
    assert "nothing registered" in text and "mlflow-artifacts" in text, text[-3000:]
    # The outage hit mid-upload: the new model's top-level files are in S3, its booster not.
    [model_id] = set(_logged_models(client, settings.experiment)) - set(models_before)
    partial = _artifact_files(stack, model_id)
    assert "MLmodel" in partial and "artifacts/model.ubj" not in partial, partial
    # ...and nothing points at it: no version, aliases untouched, the attempt marked failed.
    assert _versions(stack, model) == before
    assert alias_version(client, model, "champion") == champion
    assert alias_version(client, model, "challenger") == challenger
    logged = client.get_logged_model(model_id)
    assert str(logged.status) != "READY", logged.status
    assert client.get_run(str(logged.source_run_id)).info.status == "FAILED"

    relay.up()
    up = run_raincast(tmp_path, env, "train", timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr[-3000:]
    after = _versions(stack, model)
    assert len(after) == len(before) + 1
    version = after[-1]
    assert alias_version(client, model, "challenger") == version
    assert alias_version(client, model, "champion") == champion
    # The registered version is whole: it loads from S3 (through the server) and predicts.
    loaded = mlflow.pyfunc.load_model(model_uri(model, version))
    out = loaded.predict(pd.DataFrame([PROBE_ROW]))
    assert 0.0 <= float(out["probability"].iloc[0]) <= 1.0


@pytest.mark.timeout(600)
def test_dvc_push_to_an_unreachable_remote_fails_the_cycle_and_the_retry_pushes_and_promotes(
    registry_up: Stack, tmp_path: Path
) -> None:
    stack, model = registry_up, "rain-s3-push"
    remote = TcpProxy(stack.s3.port)  # the DVC remote's endpoint; MLflow's S3 stays up
    remote.up()
    remote.down()
    try:
        work = make_project(tmp_path, remote.url, "outage")
        url = stack.new_db("push")
        env = stack.env(work, url, model)
        settings = Settings(project_dir=work, home=work / "var", store_url=url)
        pending = settings.state_dir / "dvc-push-pending"
        cycle = ("run", "--source", "replay:replay.csv", "--date", str(LAST))

        failed = run_raincast(work, env, *cycle)
        text = failed.stdout + failed.stderr
        assert failed.returncode == 1, text[-3000:]
        assert "`dvc push` failed" in text and remote.url in text, text[-3000:]
        assert pending.exists()  # the next cycle pushes even if repro has nothing to do
        assert stack.s3.keys("dvc", "outage/") == []
        # The model was trained and registered, but its data is not in the remote: it stays
        # a challenger; no decision was taken and there is no champion.
        client = _client(stack)
        assert _versions(stack, model) == ["1"]
        assert alias_version(client, model, "challenger") == "1"
        assert alias_version(client, model, "champion") is None
        assert store.read_history(store.connect(url), model).empty

        remote.up()
        retried = run_raincast(work, env, *cycle)
        assert retried.returncode == 0, retried.stdout[-3000:] + retried.stderr[-3000:]
        assert not pending.exists()
        assert _versions(stack, model) == ["1"]  # nothing retrained
        assert alias_version(client, model, "champion") == "1"
        assert list(store.read_history(store.connect(url), model)["decision"]) == ["promoted"]
        assert stack.s3.keys("dvc", "outage/")
        status = subprocess.run(
            [DVC, "status", "-c"], cwd=work, env=env, capture_output=True, text=True, timeout=120
        )
        assert status.returncode == 0, status.stderr
        assert "new:" not in status.stdout and "deleted:" not in status.stdout, status.stdout
    finally:
        remote.down()
