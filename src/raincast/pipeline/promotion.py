"""promote, rollback and stage/alias moves: every registry decision is serialised and recorded."""

from __future__ import annotations

import logging

from raincast import catalog
from raincast.data import store
from raincast.models import tracking
from raincast.models.registry import (
    CHAMPION,
    alias_version,
    apply_drift,
    decide_promotion,
    decision_tags,
    resolve_stage,
    score_version,
)
from raincast.params import PromoteParams
from raincast.pipeline.outcome import PromotionOutcome
from raincast.settings import Settings

log = logging.getLogger(__name__)

LOCK_NAME = "raincast-registry"


def promote(
    settings: Settings,
    rule: PromoteParams,
    candidate_version: str | None = None,
    drift_mode: str = "annotate",
) -> PromotionOutcome:
    """Score the candidate and the champion on the same test slice and apply the rule.

    Serialised by a registry lock; the champion alias is re-read under the lock just
    before it is moved, so two racing promotions cannot both win on stale scores.
    """
    root = settings.project_dir
    if candidate_version is None:
        candidate_version = str(catalog.load_json(root, catalog.TRAINED)["model_version"])
    test = catalog.load_frame(root, catalog.TEST)
    window = f"{test['Date'].min()}..{test['Date'].max()}"
    name = settings.model_name
    client = tracking.configure(settings)
    engine = store.connect(settings.raw_store_url)
    version = client.get_model_version(name, candidate_version)
    if "promotion.decision" in version.tags:
        current = alias_version(client, name, CHAMPION)
        return PromotionOutcome(
            None,
            None,
            None,
            current,
            skipped=f"version {candidate_version} was already {version.tags['promotion.decision']}",
        )
    with store.exclusive_lock(engine, LOCK_NAME, settings.lock_dir):
        champion_v = alias_version(client, name, CHAMPION)
        if champion_v == candidate_version:
            return PromotionOutcome(
                None,
                None,
                None,
                champion_v,
                skipped=f"version {candidate_version} is already champion",
            )
        cand = score_version(name, candidate_version, test)
        champ = score_version(name, champion_v, test) if champion_v else None
        drift_file = catalog.DRIFT.at(root)
        drift = catalog.load_json(root, catalog.DRIFT) if drift_file.exists() else None
        decision = apply_drift(decide_promotion(cand, champ, rule), drift, drift_mode)
        # Re-read: another promoter may have moved the alias while we were scoring.
        if alias_version(client, name, CHAMPION) != champion_v:
            raise RuntimeError(
                "champion alias moved during scoring although the registry lock was held"
            )
        if decision.promote:
            client.set_registered_model_alias(name, CHAMPION, candidate_version)
        for key, value in decision_tags(decision, cand, champ, drift).items():
            client.set_model_version_tag(name, candidate_version, key, value)
            if version.run_id:
                client.set_tag(version.run_id, key, value)
        after = candidate_version if decision.promote else champion_v
        store.record_decision(
            engine,
            model_name=name,
            action="promote",
            decision=decision.label,
            candidate_version=candidate_version,
            champion_before=champion_v,
            champion_after=after,
            candidate_f1=cand.f1,
            candidate_auc=cand.roc_auc,
            champion_f1=champ.f1 if champ else None,
            champion_auc=champ.roc_auc if champ else None,
            test_window=window,
            reasons=" | ".join(decision.reasons),
        )
    log.info("version %s %s: %s", candidate_version, decision.label, "; ".join(decision.reasons))
    return PromotionOutcome(cand, champ, decision, after)


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
