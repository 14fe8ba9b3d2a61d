"""The docker side of `make test-stack` and `bench/stack.py`: a Docker engine, the images
the default profile uses (project images + stand-ins for upstream images no registry here
serves), and a compose project on them.

Nothing here pulls an image: the stand-ins' base is made with debootstrap from the Debian
mirror and `docker import`, the project images are built FROM the Python stand-in
(Dockerfile.dev / Dockerfile.mlflow take it as the PYTHON_IMAGE build argument). The engine
keeps its data root in one fixed place (DOCKER_DATA_ROOT, default /var/lib/docker), so a
later run on the same machine reuses every layer built before.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
# The stand-ins are the stack test's fixtures (tests/e2e/stack); bench/stack.py builds the same.
STANDINS = REPO / "deploy" / "standins"
OVERRIDE = REPO / "deploy" / "compose.standins.yml"
COMPOSE_FILE = REPO / "docker-compose.yml"

BASE_IMAGE = "raincast-standin/debian:bookworm"
STANDIN_TAG = "test"
#: Stand-in build targets (deploy/standins/Dockerfile); `python` is the project base.
STANDIN_TARGETS = (
    "python",
    "postgres",
    "nginx",
    "busybox",
    "s3",
    "socket-proxy",
    "statsd-exporter",
    "prometheus",
    "pushgateway",
    "postgres-exporter",
)
#: Observability-profile services that have a stand-in and run in the stack test.
OBSERVABILITY_STANDINS = ("prometheus", "pushgateway", "postgres-exporter")
#: Observability-profile services nothing here can provide (statically checked only).
NOT_RUNNABLE = ("grafana", "loki", "alloy", "docker-socket-proxy-logs", "tempo", "otel-collector")
DEBIAN_MIRROR = os.environ.get("RAINCAST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DATA_ROOT = Path(os.environ.get("DOCKER_DATA_ROOT", "/var/lib/docker"))


class EngineUnavailable(RuntimeError):
    """No Docker engine can be reached or started here."""


def _run(
    cmd: list[str], timeout: float = 600, check: bool = True, **kw: Any
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"`{' '.join(cmd[:6])} ...` failed (exit {proc.returncode}):\n"
            f"{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        )
    return proc


def docker_cli() -> str:
    """/usr/bin/docker (Debian's, with BuildKit built in) before whatever is on PATH: the
    preinstalled /usr/local/bin/docker of these machines lacks buildx."""
    for candidate in ("/usr/bin/docker", shutil.which("docker")):
        if candidate and Path(candidate).exists():
            return candidate
    raise EngineUnavailable("no docker client: `make stack-deps` installs docker.io")


def compose_cli(docker: str) -> list[str]:
    """docker-compose v1 (Debian's 1.29) if installed, else the `docker compose` plugin."""
    if v1 := shutil.which("docker-compose"):
        return [v1]
    probe = subprocess.run([docker, "compose", "version"], capture_output=True, text=True)
    if probe.returncode == 0:
        return [docker, "compose"]
    raise EngineUnavailable("no docker compose: `make stack-deps` installs docker-compose")


@dataclass
class Engine:
    docker: str
    compose: list[str]
    daemon: subprocess.Popen[bytes] | None = None  # set when this process started dockerd

    def __call__(
        self, *args: str, timeout: float = 600, check: bool = True, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "DOCKER_BUILDKIT": "1", **kw.pop("env", {})}
        return _run([self.docker, *args], timeout=timeout, check=check, env=env, **kw)

    def reachable(self) -> bool:
        return (
            self("version", "--format", "{{.Server.Version}}", timeout=20, check=False).returncode
            == 0
        )

    def has_image(self, ref: str) -> bool:
        return self("image", "inspect", ref, check=False, timeout=30).returncode == 0


def start_engine(state_dir: Path, timeout: float = 120) -> Engine:
    """The running Docker engine, or one started here (root only; stopped by stop_engine)."""
    docker = docker_cli()
    engine = Engine(docker, compose_cli(docker))
    if engine.reachable():
        return engine
    dockerd = shutil.which("dockerd")
    if dockerd is None:
        raise EngineUnavailable("no dockerd: `make stack-deps` installs docker.io")
    if os.geteuid() != 0:
        raise EngineUnavailable("no Docker engine is running and starting dockerd needs root")
    state_dir.mkdir(parents=True, exist_ok=True)
    log = (state_dir / "dockerd.log").open("ab")
    engine.daemon = subprocess.Popen(
        [dockerd, "--data-root", str(DATA_ROOT), "--pidfile", str(state_dir / "dockerd.pid")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if engine.daemon.poll() is not None:
            raise EngineUnavailable(f"dockerd exited ({engine.daemon.returncode}): see {log.name}")
        if engine.reachable():
            return engine
        time.sleep(1)
    stop_engine(engine)
    raise EngineUnavailable(f"dockerd did not answer within {timeout:.0f} s: see {log.name}")


def stop_engine(engine: Engine) -> None:
    """Stop dockerd if this process started it (it takes its containerd with it)."""
    proc = engine.daemon
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


# --- images ---------------------------------------------------------------------------------


def ca_bundle() -> Path | None:
    """The CA bundle builds trust for PyPI (a TLS-intercepting proxy's CA included):
    RAINCAST_BUILD_CA_BUNDLE, else the host's /etc/ssl/certs bundle when it exists."""
    path = Path(os.environ.get("RAINCAST_BUILD_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"))
    return path if path.is_file() else None


def ensure_base_image(engine: Engine, work: Path) -> float:
    """Debian bookworm (minbase) from the mirror via debootstrap, imported as BASE_IMAGE.
    Returns the seconds it took (0 when the image was there already)."""
    if engine.has_image(BASE_IMAGE):
        return 0.0
    debootstrap = shutil.which("debootstrap")
    if debootstrap is None:
        raise EngineUnavailable("no debootstrap: `make stack-deps` installs it")
    started = time.monotonic()
    rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=work))
    try:
        _run(
            [debootstrap, "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR], timeout=900
        )
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [engine.docker, "import", "-", BASE_IMAGE], stdin=tar.stdout, capture_output=True
        )
        tar.wait()
        if imported.returncode != 0:
            raise RuntimeError(f"docker import failed: {imported.stderr.decode()[-2000:]}")
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    return time.monotonic() - started


def build_standins(engine: Engine, work: Path) -> dict[str, float]:
    """Every stand-in target, tagged raincast-standin/<target>:STANDIN_TAG."""
    context = Path(tempfile.mkdtemp(prefix="standins-", dir=work))
    try:
        shutil.copytree(STANDINS, context, dirs_exist_ok=True)
        bundle = ca_bundle()
        (context / "build-ca.crt").write_bytes(bundle.read_bytes() if bundle else b"")
        seconds = {}
        for target in STANDIN_TARGETS:
            started = time.monotonic()
            engine(
                "build", "--target", target, "-t", standin(target), "--build-arg",
                f"BASE={BASE_IMAGE}", str(context), timeout=1800,
            )  # fmt: skip
            seconds[target] = time.monotonic() - started
        return seconds
    finally:
        shutil.rmtree(context, ignore_errors=True)


def standin(target: str) -> str:
    return f"raincast-standin/{target}:{STANDIN_TAG}"


@dataclass(frozen=True)
class ProjectImage:
    tag: str
    dockerfile: str
    target: str | None


def project_images() -> list[ProjectImage]:
    """The images docker-compose.yml builds (one per distinct tag), defaults interpolated."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    found: dict[str, ProjectImage] = {}
    for spec in services.values():
        build = spec.get("build")
        if not build:
            continue
        tag = re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", spec["image"])
        found.setdefault(tag, ProjectImage(tag, build["dockerfile"], build.get("target")))
    return list(found.values())


def build_project_images(engine: Engine, no_cache: bool = False) -> dict[str, float]:
    """Dockerfile.dev's targets and Dockerfile.mlflow, FROM the Python stand-in, trusting
    the CA bundle through the documented `ca_bundle` build secret."""
    bundle = ca_bundle()
    seconds = {}
    for image in project_images():
        args = ["build", "-f", image.dockerfile, "-t", image.tag]
        args += ["--build-arg", f"PYTHON_IMAGE={standin('python')}"]
        if image.target:
            args += ["--target", image.target]
        if bundle:
            args += ["--secret", f"id=ca_bundle,src={bundle}"]
        if no_cache:
            args.append("--no-cache")
        started = time.monotonic()
        engine(*args, str(REPO), timeout=2400)
        seconds[image.tag] = time.monotonic() - started
    return seconds


def image_sizes(engine: Engine, tags: Iterable[str]) -> dict[str, int]:
    out = {}
    for tag in tags:
        size = engine("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip()
        out[tag] = int(size)
    return out


def nginx_conf_for_debian(text: str) -> str:
    """nginx.conf for Debian's nginx 1.22: no `resolve` on upstream servers (1.27.3+), so
    names are resolved once at start, and the grafana upstream (not running in the test)
    becomes a server marked down (502) instead of a start-up error."""
    text = re.sub(r"server grafana:3000 resolve;", "server 127.0.0.1:9 down;", text)
    return re.sub(r"(\n\s*server [a-z0-9-]+:\d+) resolve;", r"\1;", text)


# --- the compose project ----------------------------------------------------------------------


def project_checkout(dest: Path) -> Path:
    """A fresh-clone-like copy of this repository (tracked and new files, no dvc.lock, no
    ignored state) with its own git history: what RAINCAST_HOST_PROJECT_DIR points at."""
    listed = _run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO
    ).stdout.split("\0")
    dest.mkdir(parents=True)
    for rel in filter(None, listed):
        src = REPO / rel
        if rel == "dvc.lock" or not src.is_file():
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
    git = ["git", "-c", "user.name=raincast-stack", "-c", "user.email=stack@raincast.invalid"]
    _run([*git, "init", "-q"], cwd=dest)
    _run([*git, "add", "-A"], cwd=dest)
    _run([*git, "commit", "-q", "-m", "stack test checkout"], cwd=dest)
    return dest


def secret() -> str:
    return secrets.token_urlsafe(24)


def stack_env(
    project: str, checkout: Path, sources: Path, port: int, nginx_conf: Path
) -> dict[str, str]:
    """An .env as an operator fills it from .env.example: fresh secrets, this test's names."""
    return {
        "COMPOSE_PROJECT_NAME": project,
        "RAINCAST_HTTP_BIND": "127.0.0.1",
        "RAINCAST_HTTP_PORT": str(port),
        "RAINCAST_PUBLIC_HOST": f"127.0.0.1:{port}",
        "RAINCAST_HOST_PROJECT_DIR": str(checkout),
        "RAINCAST_HOST_SOURCES_DIR": str(sources),
        "RAINCAST_SOURCE": "replay:/srv/raincast/sources/weatherAUS.csv.gz",
        "RAINCAST_UPDATE_SCHEDULE": "none",
        "RAINCAST_RETRAIN_SCHEDULE": "none",
        "RAINCAST_TASK_RETRY_DELAY_S": "10",
        "RAINCAST_API_POLL_S": "5",
        "RAINCAST_PUSHGATEWAY_URL": "http://pushgateway:9091",
        "RAINCAST_STANDIN_TAG": STANDIN_TAG,
        "RAINCAST_STACK_NGINX_CONF": str(nginx_conf),
        "AWS_ACCESS_KEY_ID": "raincast-pipeline",
        **{
            name: secret()
            for name in (
                "POSTGRES_PASSWORD",
                "MLFLOW_DB_PASSWORD",
                "AIRFLOW_DB_PASSWORD",
                "RAINCAST_DB_PASSWORD",
                "RAINCAST_READER_DB_PASSWORD",
                "POSTGRES_EXPORTER_PASSWORD",
                "MINIO_ROOT_PASSWORD",
                "AWS_SECRET_ACCESS_KEY",
                "MLFLOW_TRACKING_PASSWORD",
                "MLFLOW_FLASK_SECRET_KEY",
                "AIRFLOW_API_SECRET_KEY",
                "AIRFLOW_JWT_SECRET",
                "RAINCAST_AIRFLOW_PASSWORD",
                "GRAFANA_ADMIN_PASSWORD",
            )
        },
        "MINIO_ROOT_USER": "raincast-root",
        "RAINCAST_JWT_SECRET": secrets.token_urlsafe(48),
        "AIRFLOW_FERNET_KEY": _fernet_key(),
    }


def _fernet_key() -> str:
    import base64

    return base64.urlsafe_b64encode(os.urandom(32)).decode()


@dataclass
class Compose:
    """One compose project on the engine: docker-compose.yml + the stand-in override."""

    engine: Engine
    project: str
    env_file: Path
    env: dict[str, str]
    timings: dict[str, float] = field(default_factory=dict)

    def __call__(
        self, *args: str, timeout: float = 900, check: bool = True, **kw: Any
    ) -> subprocess.CompletedProcess[str]:
        cmd = [
            *self.engine.compose, "-p", self.project, "--project-directory", str(REPO),
            "-f", str(COMPOSE_FILE), "-f", str(OVERRIDE), "--env-file", str(self.env_file),
            *args,
        ]  # fmt: skip
        return _run(cmd, timeout=timeout, check=check, cwd=REPO, **kw)

    def services(self) -> list[str]:
        """Default-profile services plus the observability services with a stand-in."""
        spec = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
        core = [name for name, s in spec.items() if not s.get("profiles")]
        return core + list(OBSERVABILITY_STANDINS)

    def _inspect(self, *filters: str, all_: bool = True) -> list[dict[str, Any]]:
        """`docker inspect` of the containers matching ``filters``; one that disappears
        between the listing and the inspection (auto-removed task) is left out."""
        args = ["ps", "-q", *(["-a"] if all_ else [])]
        for f in filters:
            args += ["--filter", f]
        found = []
        for cid in self.engine(*args).stdout.split():
            out = self.engine("inspect", cid, check=False)
            if out.returncode == 0:
                found.extend(json.loads(out.stdout))
        return found

    def containers(self, all_: bool = True) -> list[dict[str, Any]]:
        """`docker inspect` of every container of the project (compose services only)."""
        return self._inspect(f"label=com.docker.compose.project={self.project}", all_=all_)

    def container(self, service: str) -> dict[str, Any]:
        for c in self.containers():
            if c["Config"]["Labels"].get("com.docker.compose.service") == service:
                return c
        raise LookupError(f"no container for service {service}")

    def exec(
        self,
        service: str,
        *cmd: str,
        timeout: float = 60,
        check: bool = True,
        user: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        name = self.container(service)["Name"].lstrip("/")
        opts = ["-u", user] if user else []
        return self.engine("exec", *opts, name, *cmd, timeout=timeout, check=check)

    def task_containers(self) -> list[dict[str, Any]]:
        """DockerOperator containers this stack started (label io.raincast.stack)."""
        return self._inspect(f"label=io.raincast.stack={self.project}")

    def remove_everything(self) -> None:
        """Containers (the task containers too), networks and volumes of this project."""
        self("down", "-v", "--remove-orphans", "--timeout", "20", timeout=300, check=False)
        for c in self.task_containers():
            self.engine("rm", "-f", c["Id"], check=False)
        prefix = self.project + "_"
        for name in self.engine("volume", "ls", "-q").stdout.split():
            if name.startswith(prefix):
                self.engine("volume", "rm", "-f", name, check=False)
        for name in self.engine("network", "ls", "--format", "{{.Name}}").stdout.split():
            if name.startswith(prefix):
                self.engine("network", "rm", name, check=False)


def new_compose(engine: Engine, work: Path, sources: Path, port: int) -> Compose:
    """A fresh compose project under ``work``: its own checkout, nginx variant, a unique
    project name, and an env file of fresh secrets (mode 0600)."""
    checkout = project_checkout(work / "checkout")
    nginx_conf = work / "nginx.conf"
    nginx_conf.write_text(nginx_conf_for_debian((REPO / "nginx.conf").read_text()))
    project = "rcstack" + secrets.token_hex(3)
    env = stack_env(project, checkout, sources.resolve(), port, nginx_conf)
    env_file = work / "stack.env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in env.items()))
    env_file.chmod(0o600)
    return Compose(engine, project, env_file, env)


def main(argv: list[str] | None = None) -> None:
    """`python -m testbed.stack.engine build`: the stand-in path of the README's production
    section, on a machine with a Docker engine but no image registry: the debootstrap base,
    the stand-ins, the project images FROM the Python stand-in, and var/stack/nginx.conf
    (the nginx 1.22 variant the override mounts)."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m testbed.stack.engine")
    parser.add_argument("command", choices=["build"])
    parser.parse_args(argv)
    state = REPO / "var" / "stack"
    state.mkdir(parents=True, exist_ok=True)
    engine = start_engine(state)
    if engine.daemon is not None:
        print(f"started dockerd (pid {engine.daemon.pid}); it keeps running", flush=True)
    work = Path(tempfile.mkdtemp(prefix="stack-build-", dir=state))
    try:
        print(f"base image: {ensure_base_image(engine, work):.0f} s", flush=True)
        print(f"stand-ins: {sum(build_standins(engine, work).values()):.0f} s", flush=True)
        for tag, seconds in build_project_images(engine).items():
            print(f"{tag}: {seconds:.0f} s", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    conf = state / "nginx.conf"
    conf.write_text(nginx_conf_for_debian((REPO / "nginx.conf").read_text()))
    print(f"add to .env: RAINCAST_STACK_NGINX_CONF={conf}")


if __name__ == "__main__":
    main()
