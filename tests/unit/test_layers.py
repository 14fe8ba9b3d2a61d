"""The rooms of `src/raincast` and what each may import: every import points down the
layers below (module level and inside functions alike); the README's code map says the same."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src" / "raincast"

#: Rooms by layer, bottom first: a room imports only rooms of lower layers (and the CLI the
#: two local launchers beside it).
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({"schema", "params", "settings"}),
    frozenset({"catalog", "features", "data", "sources", "monitoring"}),
    frozenset({"models"}),
    frozenset({"steps"}),
    frozenset({"pipeline"}),
    frozenset({"serving"}),
    frozenset({"cli", "local_stack", "local_airflow", "ui"}),
)
SIDEWAYS = {("cli", "local_stack"), ("cli", "local_airflow")}


def rank(room: str) -> int:
    return next(i for i, layer in enumerate(LAYERS) if room in layer)


def room_of(module: str) -> str:
    return module.split(".")[1] if "." in module else "raincast"


def imports(path: Path) -> set[str]:
    """The raincast modules ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("raincast"):
            if node.module == "raincast":
                found |= {f"raincast.{a.name}" for a in node.names}
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("raincast.")}
    return found


def upward(files: dict[str, set[str]]) -> list[str]:
    """Imports from a room to one in a higher layer (or the same layer, unless allowed)."""
    bad = []
    for module, targets in sorted(files.items()):
        src = room_of(module)
        for target in sorted(targets):
            dst = room_of(target)
            if src == dst or (src, dst) in SIDEWAYS:
                continue
            if rank(dst) >= rank(src):
                bad.append(f"{module} imports {target} ({src} -> {dst})")
    return bad


def source_imports() -> dict[str, set[str]]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC).with_suffix("").parts
        if parts == ("__init__",):
            continue
        out[".".join(("raincast", *parts))] = imports(path)
    return out


def test_every_room_has_a_layer() -> None:
    rooms = {room_of(m) for m in source_imports()}
    for room in rooms:
        rank(room)  # StopIteration: a new room needs a place in LAYERS


def test_no_import_runs_upward() -> None:
    assert upward(source_imports()) == []


def test_base_rooms_import_only_each_other_or_nothing() -> None:
    files = source_imports()
    for module in ("raincast.schema", "raincast.params", "raincast.settings"):
        assert {room_of(t) for t in files[module]} <= {"schema", "params", "settings"}


@pytest.mark.parametrize(
    ("module", "target"),
    [
        ("raincast.steps.train", "raincast.pipeline.cycle"),
        ("raincast.models.registry", "raincast.steps.promote"),
        ("raincast.data.store", "raincast.serving.model"),
    ],
)
def test_an_upward_import_is_reported(module: str, target: str) -> None:
    assert upward({module: {target}}) == [
        f"{module} imports {target} ({room_of(module)} -> {room_of(target)})"
    ]
