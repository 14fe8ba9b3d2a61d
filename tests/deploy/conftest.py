"""Deployment-file tests: the parsed compose file, .env.example's variables, and the system
binaries some tests drive (docker-compose's v1 config parser, hadolint, nginx, PostgreSQL).
A test whose binary is missing skips and says which one."""

from __future__ import annotations

import re
import shutil
import socket
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
ENV_EXAMPLE = REPO / ".env.example"

#: `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?err}`, `${VAR?err}`, not `$${...}`.
INTERPOLATION = re.compile(
    r"(?<!\$)\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}"
)
#: `# VAR=value` or `VAR=value` lines of .env.example.
ENV_LINE = re.compile(r"^#?\s*(?P<name>[A-Z][A-Z0-9_]*)=(?P<value>.*)$")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_binary(name: str) -> str | None:
    """``name`` next to this interpreter (the venv's hadolint) or on PATH."""
    local = Path(sys.executable).parent / name
    return str(local) if local.exists() else shutil.which(name)


def require_binary(name: str, why: str) -> str:
    path = find_binary(name)
    if path is None:
        pytest.skip(f"`{name}` not installed ({why}); `make system-deps` installs it")
    return path


@pytest.fixture(scope="session")
def compose() -> dict[str, Any]:
    """docker-compose.yml as YAML (anchors and `<<` merges resolved, no interpolation)."""
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="session")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return compose["services"]


def walk_strings(node: Any) -> list[str]:
    """Every string value (and mapping key) in a YAML tree."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, dict):
        return [s for k, v in node.items() for s in (*walk_strings(k), *walk_strings(v))]
    if isinstance(node, list):
        return [s for item in node for s in walk_strings(item)]
    return []


def interpolations(node: Any) -> dict[str, set[str]]:
    """Variable name -> the operators it is used with (``""``, ``":-"``, ``":?"``...)."""
    found: dict[str, set[str]] = {}
    for text in walk_strings(node):
        for m in INTERPOLATION.finditer(text):
            found.setdefault(m["name"], set()).add(m["op"] or "")
    return found


def env_example() -> dict[str, str]:
    """Variables documented in .env.example (commented or not) with their example values."""
    out: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        m = ENV_LINE.match(line.strip())
        if m:
            out.setdefault(m["name"], m["value"])
    return out


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's `environment`, list or mapping form, as a str -> str mapping."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def is_oneshot(service: dict[str, Any]) -> bool:
    return str(service.get("restart", "")) == "no"
