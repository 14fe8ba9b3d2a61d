"""The user file: argon2id hashes in JSON, re-read when it changes, written atomically
under a cross-process lock. Passwords and hashes are never logged."""

from __future__ import annotations

import builtins
import json
import logging
import os
import re
import secrets
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Final

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from filelock import FileLock

from raincast.serving.auth.config import ROLES, UserStoreError

log = logging.getLogger("raincast.serving.auth")  # the package's one logger

MIN_PASSWORD_CHARS: Final = 12
USERNAME_RE: Final = re.compile(r"^[a-z0-9_.-]{3,64}$")


def check_user(name: str, role: str) -> None:
    """Raise ``UserStoreError`` unless the name and role are acceptable for a new user."""
    if not USERNAME_RE.fullmatch(name):
        raise UserStoreError(f"invalid user name {name!r}: use 3-64 characters of a-z 0-9 _ . -")
    if role not in ROLES:
        raise UserStoreError(f"invalid role {role!r}: use one of {', '.join(ROLES)}")


@dataclass(frozen=True)
class UserInfo:
    """A user as listed: never the hash."""

    name: str
    role: str
    created_at: str


class UserStore:
    """Users in a JSON file of argon2id hashes, re-read whenever the file changes on disk.

    A missing file means no users: every login fails (there are no default credentials).
    Writes are atomic (temp file + ``os.replace``, mode 0600) under a cross-process lock.
    """

    def __init__(self, path: Path | str, hasher: PasswordHasher | None = None) -> None:
        self.path = Path(path)
        self._hasher = hasher or PasswordHasher()
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._users: dict[str, dict[str, str]] = {}

    @cached_property
    def _dummy_hash(self) -> str:
        # Unknown users are verified against this so the response time does not reveal them.
        return self._hasher.hash(secrets.token_urlsafe(24))

    def _current(self) -> dict[str, dict[str, str]]:
        """The users on disk; re-parsed only when the file's stat changes."""
        try:
            st = self.path.stat()
            stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
            with self._lock:
                if stamp == self._stamp:
                    return self._users
            users = _parse_users(self.path.read_bytes(), self.path)
        except FileNotFoundError:
            with self._lock:
                self._stamp, self._users = None, {}
            return {}
        if st.st_mode & 0o077:
            log.warning("user file %s is readable by other users; chmod 600 it", self.path)
        with self._lock:
            self._stamp, self._users = stamp, users
        return users

    def list(self) -> builtins.list[UserInfo]:
        """Every user, sorted by name."""
        return [
            UserInfo(name, u["role"], u.get("created_at", ""))
            for name, u in sorted(self._current().items())
        ]

    def add(self, name: str, password: str, role: str = "user") -> None:
        """Add a user; refuses bad names, unknown roles, short passwords and duplicates."""
        check_user(name, role)
        if len(password) < MIN_PASSWORD_CHARS:
            raise UserStoreError(
                f"password too short: use at least {MIN_PASSWORD_CHARS} characters"
            )
        entry = {
            "hash": self._hasher.hash(password),
            "role": role,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        }

        def change(users: dict[str, dict[str, str]]) -> None:
            if name in users:
                raise UserStoreError(f"user {name!r} already exists")
            users[name] = entry

        self._update(change)

    def remove(self, name: str) -> None:
        """Remove a user; ``LookupError`` if there is none of that name."""

        def change(users: dict[str, dict[str, str]]) -> None:
            if users.pop(name, None) is None:
                raise LookupError(f"no user {name!r}")

        self._update(change)

    def verify(self, name: str, password: str) -> str | None:
        """The user's role if the password is right, else None (same cost either way)."""
        dummy = self._dummy_hash  # built on first use by any user, so that call is not a tell
        try:
            user = self._current().get(name)
        except UserStoreError:
            log.exception("user file %s is unreadable; refusing every login", self.path)
            user = None
        stored = user["hash"] if user else dummy
        try:
            self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if user is None:  # cannot happen (the dummy matches no password), but never let it in
            return None
        if self._hasher.check_needs_rehash(stored):
            self._rehash(name, stored, password)
        return user["role"]

    def _rehash(self, name: str, old_hash: str, password: str) -> None:
        new_hash = self._hasher.hash(password)

        def change(users: dict[str, dict[str, str]]) -> None:
            if users.get(name, {}).get("hash") == old_hash:  # unchanged since we verified
                users[name]["hash"] = new_hash

        try:
            self._update(change)
        except (OSError, UserStoreError) as err:  # e.g. a read-only file: still log in
            log.warning("could not rehash the password of %s: %s", name, err)

    def _update(self, change: Callable[[dict[str, dict[str, str]]], None]) -> None:
        """Read-modify-write under a cross-process lock; atomic replace with mode 0600."""
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with FileLock(f"{self.path}.lock", timeout=10):
            users = _parse_users(self.path.read_bytes(), self.path) if self.path.exists() else {}
            change(users)
            data = json.dumps({"users": users}, indent=2, sort_keys=True).encode() + b"\n"
            fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=".users.", suffix=".tmp")
            try:
                os.fchmod(fd, 0o600)
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.replace(tmp, self.path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise


def _parse_users(raw: bytes, path: Path) -> dict[str, dict[str, str]]:
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UserStoreError(f"{path} is not valid JSON: {err}") from None
    users = doc.get("users") if isinstance(doc, dict) else None
    if not isinstance(users, dict):
        raise UserStoreError(f'{path} must hold {{"users": {{...}}}}')
    for name, u in users.items():
        if not (isinstance(u, dict) and isinstance(u.get("hash"), str) and u.get("role") in ROLES):
            raise UserStoreError(f"{path}: entry {name!r} needs a hash and a role in {ROLES}")
    return users
