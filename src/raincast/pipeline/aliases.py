"""Rollback and stage/alias moves by hand: serialised with promotions by the registry lock,
and recorded in the store's decision history like them."""

from __future__ import annotations

from raincast.data import store
from raincast.models import tracking
from raincast.models.registry import CHAMPION, alias_version, resolve_stage
from raincast.settings import Settings
from raincast.steps.promote import LOCK_NAME


def move_alias(
    settings: Settings, version: str, label: str, action: str = "alias", reason: str = ""
) -> str | None:
    """Point an alias (or a stage name mapped to one) at ``version``; recorded in history."""
    alias = resolve_stage(label)
    name = settings.model_name
    client = tracking.configure(settings)
    engine = store.connect(settings.raw_store_url)
    client.get_model_version(name, version)  # fails clearly for an unknown version
    with store.exclusive_lock(engine, LOCK_NAME, settings.lock_dir):
        before = alias_version(client, name, CHAMPION)
        if alias is None:  # Archived / None: detach the version from every alias
            for a in client.get_model_version(name, version).aliases:
                client.delete_registered_model_alias(name, a)
            client.set_model_version_tag(
                name, version, "archived", "true" if label.lower() == "archived" else "false"
            )
        else:
            client.set_registered_model_alias(name, alias, version)
        after = alias_version(client, name, CHAMPION)
        store.record_decision(
            engine,
            model_name=name,
            action=action,
            decision="moved",
            candidate_version=version,
            champion_before=before,
            champion_after=after,
            reasons=reason or f"{label} -> {alias or 'no alias'} on version {version}",
        )
    return alias


def rollback(settings: Settings, to_version: str | None = None) -> tuple[str | None, str]:
    """Move the champion back: to ``to_version``, or to the champion before the current one."""
    engine = store.connect(settings.raw_store_url)
    client = tracking.configure(settings)
    current = alias_version(client, settings.model_name, CHAMPION)
    if to_version is None:
        hist = store.read_history(engine, settings.model_name)
        moves = hist[
            (hist["champion_after"] == current)
            & (hist["champion_before"].notna())
            & (hist["champion_before"] != current)
        ]
        if moves.empty:
            raise LookupError(
                f"no earlier champion recorded for {settings.model_name} (current: {current})"
            )
        to_version = str(moves.iloc[-1]["champion_before"])
    move_alias(
        settings,
        to_version,
        CHAMPION,
        action="rollback",
        reason=f"rollback {current} -> {to_version}",
    )
    return current, to_version
