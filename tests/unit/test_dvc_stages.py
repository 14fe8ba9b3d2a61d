"""dvc.yaml follows the code each stage runs: a stage's cmd is `raincast <stage>`, and its
deps name the module that command lives in plus every raincast module the stage function it
calls (`raincast.steps.<stage>.run`) imports, directly or not. Code missing from
deps is code DVC does not watch: a change to it would leave the old model and metrics marked
up to date.

Modules are found by name (the `raincast` CLI, then import resolution), not by path, so the
check follows the code when files move. Not counted: what the command module imports for
itself (settings and logging set-up, spans and metrics pushes in monitoring.jobs).
"""

from __future__ import annotations

import ast
import importlib.util
import inspect
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml

from raincast.cli import app

REPO = Path(__file__).resolve().parents[2]
STAGES: dict[str, dict[str, Any]] = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def _source(module: str) -> Path:
    """The module's file, relative to the repository (as dvc.yaml names it)."""
    spec = importlib.util.find_spec(module)
    assert spec is not None and spec.origin, f"no source file for {module}"
    return Path(spec.origin).resolve().relative_to(REPO)


def _tree(module: str) -> ast.Module:
    return ast.parse((REPO / _source(module)).read_text())


def _is_package(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    return spec is not None and spec.submodule_search_locations is not None


def _ours(module: str) -> bool:
    return module == "raincast" or module.startswith("raincast.")


def _bindings(node: ast.Import | ast.ImportFrom, importer: str) -> list[tuple[str, str, bool]]:
    """(name bound, raincast module loaded, whether the name is that module) per imported
    name of an import statement in module ``importer``; other packages are not looked up."""
    if isinstance(node, ast.Import):
        return [
            (a.asname or a.name.partition(".")[0], a.name, a.asname is not None)
            for a in node.names
            if _ours(a.name)
        ]
    package = importer if _is_package(importer) else importer.rpartition(".")[0]
    base = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
    if not _ours(base):
        return []
    found = []
    for a in node.names:  # `from package import submodule`, or a name defined in a module
        is_module = _is_package(base) and importlib.util.find_spec(f"{base}.{a.name}") is not None
        found.append((a.asname or a.name, f"{base}.{a.name}" if is_module else base, is_module))
    return found


def _imports(nodes: Iterable[ast.AST], importer: str) -> set[str]:
    """Raincast modules imported anywhere in ``nodes``, except `if TYPE_CHECKING:` blocks."""
    found: set[str] = set()
    todo = list(nodes)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            found |= {module for _, module, _ in _bindings(node, importer)}
        todo.extend(ast.iter_child_nodes(node))
    return found


def _command(stage: str) -> Callable[..., Any] | None:
    """The function behind `raincast <stage>` (through typer's and our own wrappers)."""
    command = typer.main.get_command(app).commands.get(stage)  # type: ignore[attr-defined]
    return inspect.unwrap(command.callback) if command and command.callback else None


def _stage_functions(command: Callable[..., Any]) -> set[tuple[str, str]]:
    """(module, function) for each `module.function(...)` the command calls on a raincast
    module it imports (in its body or at the top of its module)."""
    body = ast.parse(inspect.getsource(command).lstrip())
    modules = {
        name: module
        for node in [*_tree(command.__module__).body, *ast.walk(body)]
        if isinstance(node, ast.Import | ast.ImportFrom)
        for name, module, is_module in _bindings(node, command.__module__)
        if is_module
    }
    return {
        (modules[call.func.value.id], call.func.attr)
        for call in ast.walk(body)
        if isinstance(call, ast.Call)
        and isinstance(call.func, ast.Attribute)
        and isinstance(call.func.value, ast.Name)
        and call.func.value.id in modules
    }


def _function_imports(module: str, function: str) -> set[str]:
    """What running ``function`` imports: its module's top level, its own body, and the
    bodies of the module's functions it calls (the stage functions share one module)."""
    tree = _tree(module)
    functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    top = [n for n in tree.body if not isinstance(n, ast.FunctionDef)]
    found = _imports(top, module)
    todo, seen = [function], set()
    while todo:
        name = todo.pop()
        if name in seen or name not in functions:
            continue
        seen.add(name)
        found |= _imports([functions[name]], module)
        todo += [
            c.func.id
            for c in ast.walk(functions[name])
            if isinstance(c, ast.Call) and isinstance(c.func, ast.Name)
        ]
    return found


def stage_code(stage: str) -> tuple[str, set[str]]:
    """The module of `raincast <stage>`, and its stage logic: the module of the stage
    function it calls and what that function imports, closed over every import of those."""
    command = _command(stage)
    assert command is not None, f"no `raincast {stage}` command"
    called = _stage_functions(command)
    done = {module for module, _ in called}  # only the called functions of these count
    todo = set().union(*(_function_imports(m, f) for m, f in called)) - done
    while todo:
        module = todo.pop()
        done.add(module)
        todo |= _imports([_tree(module)], module) - done
    return command.__module__, done


def problems(stage: str, spec: dict[str, Any]) -> list[str]:
    """What is wrong with one dvc.yaml stage: its cmd, code it runs that no dep covers (as a
    file or a parent folder), source deps that do not exist."""
    if spec.get("cmd") != f"raincast {stage}":
        return [f"{stage}: cmd is {spec.get('cmd')!r}, not 'raincast {stage}'"]
    deps = [Path(d) for d in spec.get("deps", [])]
    command_module, modules = stage_code(stage)
    found = [
        f"{stage}: {module} ({_source(module)}) is not in deps"
        for module in sorted({command_module, *modules})
        if not any(d == _source(module) or d in _source(module).parents for d in deps)
    ]
    return found + [
        f"{stage}: dep {d} does not exist"
        for d in deps
        if d.parts[0] == "src" and not (REPO / d).exists()
    ]


@pytest.mark.parametrize("stage", list(STAGES))
def test_stage_deps_cover_the_code_it_runs(stage: str) -> None:
    assert problems(stage, STAGES[stage]) == []


def test_each_stage_has_its_own_code() -> None:
    code = {stage: stage_code(stage)[1] for stage in ("process", "drift", "train")}
    assert {"raincast.data.store", "raincast.params"} <= code["process"]
    assert "raincast.monitoring.drift" in code["drift"] - code["process"] - code["train"]
    assert {"raincast.models.train", "raincast.schema", "raincast.params"} <= code["train"]
    assert "raincast.models.train" not in code["process"] | code["drift"]


@pytest.mark.parametrize(
    ("stage", "change", "expected"),
    [
        (
            "train",
            {"drop": "src/raincast/models/train.py"},
            ["train: raincast.models.train (src/raincast/models/train.py) is not in deps"],
        ),
        (
            "split",
            {"drop": "src/raincast/params.py"},
            ["split: raincast.params (src/raincast/params.py) is not in deps"],
        ),
        ("evaluate", {"drop": "src/raincast/models/", "add": "src/raincast/models"}, []),
        (
            "drift",
            {"add": "src/raincast/gone.py"},
            ["drift: dep src/raincast/gone.py does not exist"],
        ),
        (
            "process",
            {"cmd": "raincast export"},
            ["process: cmd is 'raincast export', not 'raincast process'"],
        ),
    ],
)
def test_a_doctored_stage_is_reported(
    stage: str, change: dict[str, str], expected: list[str]
) -> None:
    """From a stage whose deps are exactly its code: drop deps, add one, or change cmd."""
    command_module, modules = stage_code(stage)
    deps = sorted(str(_source(m)) for m in {command_module, *modules})
    assert problems(stage, {"cmd": f"raincast {stage}", "deps": deps}) == []
    drop, add = change.get("drop"), change.get("add")
    doctored = {
        "cmd": change.get("cmd", f"raincast {stage}"),
        "deps": [d for d in deps if not (drop and d.startswith(drop))] + ([add] if add else []),
    }
    assert problems(stage, doctored) == expected
