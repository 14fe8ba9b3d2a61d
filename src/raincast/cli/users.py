"""`raincast users add|remove|list`: the API's user file, managed without the JWT secret."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from raincast.cli._common import fail

if TYPE_CHECKING:
    from raincast.serving.auth import UserStore

app = typer.Typer(
    help="Manage API users in $RAINCAST_USERS_FILE (default var/users.json).",
    no_args_is_help=True,
)


def _user_store() -> UserStore:
    from raincast.settings import Settings

    try:
        from raincast.serving.auth import UserStore
    except ImportError as err:
        raise fail(f"{err}; install the serve extra: pip install 'raincast[serve]'") from err
    return UserStore(Settings().users_file)


@app.command("add")
def users_add(
    name: Annotated[str, typer.Argument(help="User name: 3-64 of a-z 0-9 _ . -")],
    role: Annotated[str, typer.Option(help="user | admin (admin may call /admin/*).")] = "user",
    password_stdin: Annotated[
        bool, typer.Option("--password-stdin", help="Read the password from stdin (scripts).")
    ] = False,
) -> None:
    """Add a user; the password (12+ characters) is stored only as an argon2id hash."""
    import sys

    from raincast.serving.auth import UserStoreError, check_user

    store = _user_store()
    try:
        check_user(name, role)  # before asking for a password
    except UserStoreError as err:
        raise fail(str(err)) from err
    if password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
    else:
        password = typer.prompt("Password", hide_input=True, confirmation_prompt=True)
    try:
        store.add(name, password, role)
    except UserStoreError as err:
        raise fail(str(err)) from err
    typer.echo(f"added {role} {name} to {store.path}")


@app.command("remove")
def users_remove(name: Annotated[str, typer.Argument(help="User name.")]) -> None:
    """Remove a user; tokens already issued stay valid until they expire."""
    from raincast.serving.auth import UserStoreError

    store = _user_store()
    try:
        store.remove(name)
    except (LookupError, UserStoreError) as err:
        raise fail(str(err)) from err
    typer.echo(f"removed {name} from {store.path}")


@app.command("list")
def users_list() -> None:
    """User names and roles (never the hashes)."""
    from raincast.serving.auth import UserStoreError

    store = _user_store()
    try:
        users = store.list()
    except UserStoreError as err:
        raise fail(str(err)) from err
    if not users:
        typer.echo(f"no users in {store.path}")
    for u in users:
        typer.echo(f"{u.name:<24} {u.role:<6} {u.created_at}")
