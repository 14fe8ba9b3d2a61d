"""`raincast users add|remove|list`: the API user file, managed without the JWT secret."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from raincast.cli import app
from raincast.serving.auth import UserStore

PASSWORD = "correct-horse-battery"


@pytest.fixture
def users_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "var" / "users.json"
    monkeypatch.setenv("RAINCAST_USERS_FILE", str(path))
    monkeypatch.delenv("RAINCAST_JWT_SECRET", raising=False)  # not needed to manage users
    return path


runner = CliRunner()


def _add(name: str, password: str = PASSWORD, *extra: str) -> tuple[int, str, str]:
    r = runner.invoke(app, ["users", "add", name, "--password-stdin", *extra], input=password)
    return r.exit_code, r.stdout, r.stderr


def test_add_list_remove(users_file: Path) -> None:
    assert _add("alice")[0] == 0
    assert _add("root", PASSWORD + "\n", "--role", "admin")[0] == 0

    raw = users_file.read_text()
    assert PASSWORD not in raw
    assert stat.S_IMODE(users_file.stat().st_mode) == 0o600
    assert UserStore(users_file).verify("root", PASSWORD) == "admin"  # newline stripped

    r = runner.invoke(app, ["users", "list"])
    assert r.exit_code == 0
    lines = [line.split()[:2] for line in r.stdout.splitlines()]
    assert lines == [["alice", "user"], ["root", "admin"]]
    assert "argon2" not in r.stdout

    r = runner.invoke(app, ["users", "remove", "alice"])
    assert r.exit_code == 0
    assert UserStore(users_file).verify("alice", PASSWORD) is None
    assert [u.name for u in UserStore(users_file).list()] == ["root"]


def test_add_prompts_twice_for_a_hidden_password(users_file: Path) -> None:
    r = runner.invoke(app, ["users", "add", "alice"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert r.exit_code == 0, r.output
    assert PASSWORD not in r.output  # hidden input is not echoed
    assert UserStore(users_file).verify("alice", PASSWORD) == "user"


def test_duplicate_user_fails(users_file: Path) -> None:
    assert _add("alice")[0] == 0
    before = users_file.read_bytes()
    code, _, err = _add("alice", "another-password-1")
    assert code == 1
    assert "already exists" in err
    assert users_file.read_bytes() == before


@pytest.mark.parametrize(
    ("name", "password", "extra", "message"),
    [
        ("alice", "tiny-pw", (), "too short"),
        ("alice", PASSWORD, ("--role", "root"), "invalid role"),
        ("Alice Smith", PASSWORD, (), "invalid user name"),
    ],
)
def test_bad_input_fails_without_writing(
    users_file: Path, name: str, password: str, extra: tuple[str, ...], message: str
) -> None:
    code, out, err = _add(name, password, *extra)
    assert code == 1
    assert message in err
    assert password not in out + err
    assert not users_file.exists()


def test_remove_unknown_user_fails(users_file: Path) -> None:
    r = runner.invoke(app, ["users", "remove", "nobody"])
    assert r.exit_code == 1
    assert "no user 'nobody'" in r.stderr


def test_list_without_file(users_file: Path) -> None:
    r = runner.invoke(app, ["users", "list"])
    assert r.exit_code == 0
    assert "no users" in r.stdout
    assert not users_file.exists()


def test_corrupt_file_is_reported(users_file: Path) -> None:
    users_file.parent.mkdir(parents=True)
    users_file.write_text("[]")
    r = runner.invoke(app, ["users", "list"])
    assert r.exit_code == 1
    assert "must hold" in r.stderr
