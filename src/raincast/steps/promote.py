"""promote: the challenger against the champion on the same test slice, by the rule in
params.yaml; the decision is serialised by the registry lock and recorded in the store."""

from __future__ import annotations

import logging

from raincast import catalog
from raincast.data import store
from raincast.models import tracking
from raincast.models.compare import PairedRows
from raincast.models.registry import (
    CHAMPION,
    alias_version,
    decision_extra,
    decision_tags,
    gate_decision,
    predict_version,
    score_predictions,
)
from raincast.params import PromoteParams
from raincast.settings import Settings
from raincast.steps.outcome import PromotionOutcome

log = logging.getLogger(__name__)

#: The registry lock: promotions, rollbacks and alias moves take turns.
LOCK_NAME = "raincast-registry"


def run(
    settings: Settings,
    rule: PromoteParams,
    candidate_version: str | None = None,
    drift_mode: str = "annotate",
) -> PromotionOutcome:
    """Score the candidate and the champion on the same test slice and apply the gate
    (``promote.gate``: enforce, dry_run or off; see ``registry.gate_decision``).

    Each model is loaded and predicts the slice once; its scores and the paired checks
    (bootstrap intervals, station guard) come from those predictions. With the gate off the
    champion is not scored. Serialised by a registry lock; the champion alias is re-read
    under the lock just before it is moved, so two racing promotions cannot both win on
    stale scores.
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
        cand_rows = predict_version(name, candidate_version, test)
        cand = score_predictions(candidate_version, cand_rows)
        champ, paired = None, None
        if champion_v and rule.gate != "off":
            champ_rows = predict_version(name, champion_v, test)
            champ = score_predictions(champion_v, champ_rows)
            paired = PairedRows(cand_rows, champ_rows)
        drift_file = catalog.DRIFT.at(root)
        drift = catalog.load_json(root, catalog.DRIFT) if drift_file.exists() else None
        decision = gate_decision(cand, champ, rule, paired, drift, drift_mode)
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
            extra=decision_extra(decision),
        )
    log.info("version %s %s: %s", candidate_version, decision.label, "; ".join(decision.reasons))
    return PromotionOutcome(cand, champ, decision, after)
