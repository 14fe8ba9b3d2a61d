"""Dockerfile.dev / Dockerfile.mlflow / .dockerignore: hadolint-clean, built from the lock,
non-root, and nothing but the needed files in the build context. (No Docker engine here:
the images themselves are built by `docker compose build`.)"""

from __future__ import annotations

import fnmatch
import re
import subprocess
import tomllib
from pathlib import Path

import pytest

from tests.deploy.conftest import REPO, require_binary

DEV = REPO / "Dockerfile.dev"
MLFLOW = REPO / "Dockerfile.mlflow"
TARGETS = ("trainer", "api", "ui", "airflow")


def stages(path: Path) -> dict[str, str]:
    """Stage name -> its instructions (continuation lines joined)."""
    text = re.sub(r"\\\n\s*", " ", path.read_text())
    out: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        m = re.match(r"FROM \S+ AS (\S+)", line)
        if m:
            current = m[1]
            out[current] = ""
        if current and not line.lstrip().startswith("#"):
            out[current] += line + "\n"
    return out


def locked_version(package: str) -> str:
    lock = (REPO / "uv.lock").read_text()
    m = re.search(rf'^name = "{re.escape(package)}"\nversion = "([^"]+)"', lock, re.MULTILINE)
    assert m, package
    return m[1]


def hadolint(*paths: Path) -> subprocess.CompletedProcess[str]:
    binary = require_binary("hadolint", "the Dockerfile linter")
    return subprocess.run(
        [binary, "--no-color", *map(str, paths)], capture_output=True, text=True, timeout=60
    )


def test_hadolint_passes() -> None:
    proc = hadolint(DEV, MLFLOW)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install requests\nRUN cd /app\n")
    proc = hadolint(bad)
    assert proc.returncode != 0
    assert "DL3007" in proc.stdout and "DL3013" in proc.stdout


def test_targets_run_as_the_raincast_user_from_the_locked_environment() -> None:
    found = stages(DEV)
    assert set(TARGETS) <= set(found)
    assert "useradd --system --uid 10001 --gid raincast" in found["runtime"]
    for target in TARGETS:
        assert re.search(r"^FROM runtime AS", found[target], re.MULTILINE), target
        assert "USER 10001:10001" in found[target], target
        assert f"COPY --from=env-{target} /opt/venv /opt/venv" in found[target], target
    assert 'pip install --no-cache-dir "uv==0.13.8"' in found["builder"]
    syncs = re.findall(r"uv sync [^\n]*", DEV.read_text())
    assert len(syncs) == 2 * (len(TARGETS) - 1)  # the UI's versions are exported from the lock
    assert all("--locked" in s and "--no-dev" in s for s in syncs)
    assert "uv export --locked --no-dev --extra ui" in found["env-ui"]


def test_each_target_syncs_existing_extras_and_the_trainer_stays_airflow_free() -> None:
    extras = set(
        tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    )
    found = stages(DEV)
    wanted = {
        "trainer": {"monitor", "postgres"},
        "api": {"serve", "monitor", "postgres"},  # Monitor reads the PostgreSQL store
        "ui": {"ui"},  # the lock's versions only: see the next test
    }
    wanted["airflow"] = {"airflow"}
    for target, expected in wanted.items():
        used = set(re.findall(r"--extra (\S+)", found[f"env-{target}"]))
        assert used == expected, target
        assert used <= extras, target


def test_the_ui_image_installs_no_pipeline_library() -> None:
    """env-ui installs Streamlit and pydantic-settings at the lock's versions and the package
    without its dependencies: no store driver, MLflow or XGBoost (the UI talks to the API)."""
    stage = stages(DEV)["env-ui"]
    assert "uv sync" not in stage
    assert "-c /tmp/lock.txt" in stage and "streamlit pydantic-settings" in stage
    assert "--no-deps ." in stage


def test_serving_images_expose_their_port_with_a_healthcheck() -> None:
    found = stages(DEV)
    assert "EXPOSE 3000" in found["api"]
    assert "HEALTHCHECK" in found["api"] and "127.0.0.1:3000/readyz" in found["api"]
    assert (
        'CMD ["bentoml", "serve", "raincast.serving.service:RainService", '
        '"--host", "0.0.0.0", "--port", "3000"]'
    ) in found["api"]
    assert "EXPOSE 8501" in found["ui"] and "_stcore/health" in found["ui"]
    script = re.search(r'CMD \["streamlit", "run", "([^"]+)"\]', found["ui"])
    assert script and (REPO / script[1]).is_file(), "the UI script the image runs"
    assert 'CMD ["raincast", "--help"]' in found["trainer"]


def test_nothing_is_installed_when_a_container_starts() -> None:
    for path in (DEV, MLFLOW):
        for line in re.sub(r"\\\n\s*", " ", path.read_text()).splitlines():
            if line.startswith(("CMD", "ENTRYPOINT")):
                assert not re.search(r"pip|uv (sync|pip)|apt-get", line), f"{path.name}: {line}"


def test_mlflow_image_matches_the_project_pins() -> None:
    text = MLFLOW.read_text()
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    mlflow_pin = next(d for d in project["dependencies"] if d.startswith("mlflow"))
    assert f'"mlflow[auth]{mlflow_pin.removeprefix("mlflow")}"' in text
    assert f'"psycopg2-binary=={locked_version("psycopg2-binary")}"' in text
    assert f'"boto3=={locked_version("boto3")}"' in text
    assert "USER 10001:10001" in text
    assert "127.0.0.1:5000/health" in text


# --- build context ---------------------------------------------------------------------


def dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern wins ('!' re-includes). Enough of it for
    the allow-list in .dockerignore (no character classes)."""
    excluded = False
    for raw in (REPO / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        candidates = [pattern, pattern.removeprefix("**/")]
        if any(fnmatch.fnmatchcase(p, c) for p in prefixes for c in candidates) or any(
            fnmatch.fnmatchcase(part, candidates[1]) for part in parts if pattern.startswith("**/")
        ):
            excluded = not negate
    return excluded


@pytest.mark.parametrize(
    "path",
    [
        "var/raincast.db",
        "data/model/model.ubj",
        ".venv/bin/python",
        ".git/HEAD",
        "tests/unit/test_split.py",
        ".env",
        "bench/run.py",
        "src/raincast/__pycache__/cli.cpython-311.pyc",
    ],
)
def test_build_context_leaves_out(path: str) -> None:
    assert dockerignore_excludes(path)


def test_build_context_keeps_what_the_dockerfiles_copy() -> None:
    sources = []
    for path in (DEV, MLFLOW):
        for m in re.finditer(
            r"^COPY (?!--from)(?:--\S+ )*(.+) \S+$", path.read_text(), re.MULTILINE
        ):
            sources += m[1].split()
    assert sources, "Dockerfile.dev copies the project"
    for source in sources:
        assert (REPO / source).exists(), source
        assert not dockerignore_excludes(source.rstrip("/")), source
    assert not dockerignore_excludes("src/raincast/cli/__init__.py")
    assert not dockerignore_excludes("dags/raincast_tasks.py")
