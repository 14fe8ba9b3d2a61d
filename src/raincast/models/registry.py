"""Registry decisions: the promotion gate, serialised alias moves, rollback and stage names.

The one home of the alias names (`CHAMPION`, `CHALLENGER`). scikit-learn and MLflow's
model loading are imported by `predict_version` / `score_predictions` alone, so a step that
only needs a name or an alias lookup (the drift stage) does not pay for them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field, replace
from typing import TYPE_CHECKING, Any

from mlflow.exceptions import MlflowException

from raincast.models.compare import (
    Interval,
    PairedRows,
    RowPredictions,
    StationAuc,
    paired_bootstrap,
    station_aucs,
)
from raincast.params import PromoteParams

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

log = logging.getLogger(__name__)

#: The registry aliases raincast moves: the served model, and the one just trained.
CHAMPION = "champion"
CHALLENGER = "challenger"

#: Stage names of stage-based registries, mapped to the aliases raincast uses.
STAGE_ALIASES: dict[str, str | None] = {
    "production": CHAMPION,
    "staging": CHALLENGER,
    "archived": None,  # no alias: the version is detached from every alias and tagged
    "none": None,
}
#: The gate's checks, as `Decision.blocked_by` names them: the leakage alarm, the point
#: F1 margin and AUC tolerance, the bootstrap's F1 gain and AUC loss, the station guard and
#: drift.mode=block.
CHECKS: tuple[str, ...] = (
    "leakage", "f1_margin", "auc_tolerance", "f1_significance", "auc_significance", "station",
    "drift",
)  # fmt: skip
_ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")


@dataclass(frozen=True)
class Scores:
    version: str
    f1: float
    roc_auc: float
    threshold: float


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)
    #: The gate mode that made the decision (``promote.gate``).
    gate: str = "enforce"
    #: Set by `gate_decision`: what the rule decided (enforce) or would have decided
    #: (dry_run); None when the gate was off and nothing was compared.
    verdict: bool | None = None
    #: The paired bootstrap intervals (``promote.significance: bootstrap``, with a champion).
    f1_gain: Interval | None = None
    auc_gain: Interval | None = None
    #: How many stations the guard compared (None: it did not run), and those whose AUC
    #: drop blocked the challenger.
    stations_checked: int | None = None
    stations_blocking: tuple[StationAuc, ...] = ()
    #: The checks that failed, by name (`CHECKS`): they blocked the challenger in enforce,
    #: and would have in dry_run.
    blocked_by: tuple[str, ...] = ()

    @property
    def label(self) -> str:
        """promoted / rejected; a promotion the gate did not decide says so
        (``promoted-dry-run``, ``promoted-no-gate``: at most 16 characters, the width of
        the history's ``decision`` column)."""
        if not self.promote:
            return "rejected"
        return {"dry_run": "promoted-dry-run", "off": "promoted-no-gate"}.get(self.gate, "promoted")


def _leakage(candidate: Scores, rule: PromoteParams) -> str | None:
    if candidate.roc_auc > rule.leakage_auc:
        return (
            f"leakage alarm: ROC AUC {candidate.roc_auc:.4f} > {rule.leakage_auc} "
            "is implausibly high"
        )
    return None


def decide_promotion(
    candidate: Scores,
    champion: Scores | None,
    rule: PromoteParams,
    rows: PairedRows | None = None,
) -> Decision:
    """The promotion rule of params.yaml, as a pure function (what enforce would decide).

    Leakage alarm first (blocks even a first model), then first-model, then F1 gain with
    an AUC guardrail. A tie is not a win. With ``promote.significance: bootstrap`` the F1
    gain must also be significant and a significant ROC AUC loss blocks; the station guard
    blocks a challenger that is much worse than the champion at one station. Both need
    ``rows``, the two models' per-row predictions on the same test slice; a rule that needs
    them and is not given them is an error, not a silently weaker gate.
    """
    if leak := _leakage(candidate, rule):
        return Decision(False, [leak], blocked_by=("leakage",))
    if champion is None:
        return Decision(True, ["first model: no champion yet"])
    reasons = []
    gain = candidate.f1 - champion.f1
    f1_ok = gain >= rule.f1_margin - 1e-12  # float noise must not turn "equal" into "less"
    reasons.append(
        f"F1 {candidate.f1:.4f} vs champion {champion.f1:.4f} (gain {gain:+.4f}, "
        f"needs >= {rule.f1_margin}): {'ok' if f1_ok else 'not enough'}"
    )
    floor = champion.roc_auc - rule.auc_tolerance
    auc_ok = candidate.roc_auc >= floor
    reasons.append(
        f"ROC AUC {candidate.roc_auc:.4f} vs floor {floor:.4f} (champion {champion.roc_auc:.4f} "
        f"- {rule.auc_tolerance}): {'ok' if auc_ok else 'regression'}"
    )
    needs_rows = rule.significance != "none" or rule.station_auc_drop is not None
    if needs_rows and rows is None:
        raise ValueError(
            "the promotion rule needs both models' per-row predictions "
            "(promote.significance / promote.station_auc_drop)"
        )
    failed = _failed(f1_margin=f1_ok, auc_tolerance=auc_ok)
    decision = Decision(f1_ok and auc_ok, reasons, blocked_by=failed)
    if rows is not None and rule.significance == "bootstrap":
        decision = _significance(decision, rows, rule)
    if rows is not None and rule.station_auc_drop is not None:
        decision = _station_guard(decision, rows, rule)
    return decision


def _failed(**passed: bool) -> tuple[str, ...]:
    """The names of the checks that did not pass, in the order given."""
    return tuple(name for name, ok in passed.items() if not ok)


def _significance(decision: Decision, rows: PairedRows, rule: PromoteParams) -> Decision:
    """The paired bootstrap part of the rule: the F1 gain's interval must lie above 0, and
    an ROC AUC change whose whole interval lies below -auc_tolerance blocks."""
    f1, auc = paired_bootstrap(rows, rule.confidence, rule.bootstrap_resamples, rule.seed)
    f1_ok = f1.low > 0
    auc_ok = not auc.high < -rule.auc_tolerance
    f1_note = "significant" if f1_ok else "significant loss" if f1.high < 0 else "not significant"
    reasons = [
        f"F1 gain {f1}: {f1_note}",
        f"ROC AUC change {auc}: "
        + ("no significant loss" if auc_ok else f"significant loss beyond -{rule.auc_tolerance}"),
    ]
    return replace(
        decision,
        promote=decision.promote and f1_ok and auc_ok,
        reasons=[*decision.reasons, *reasons],
        blocked_by=(*decision.blocked_by, *_failed(f1_significance=f1_ok, auc_significance=auc_ok)),
        f1_gain=f1,
        auc_gain=auc,
    )


def _station_guard(decision: Decision, rows: PairedRows, rule: PromoteParams) -> Decision:
    """Block a challenger whose ROC AUC at a station (>= station_min_rows rows, both
    classes) falls more than station_auc_drop below the champion's there."""
    assert rule.station_auc_drop is not None
    checked = station_aucs(rows, rule.station_min_rows)
    worse = tuple(s for s in checked if s.drop > rule.station_auc_drop + 1e-12)
    scope = f"{len(checked)} station(s) with >= {rule.station_min_rows} rows"
    if worse:
        named = ", ".join(str(s) for s in sorted(worse, key=lambda s: -s.drop))
        reason = (
            f"station ROC AUC drops more than {rule.station_auc_drop} at {len(worse)} of "
            f"{scope} (challenger vs champion): {named}"
        )
    elif not checked:
        reason = (
            f"station ROC AUC: not compared, no station has >= {rule.station_min_rows} "
            "test rows with both classes"
        )
    else:
        reason = f"station ROC AUC: no drop over {rule.station_auc_drop} at {scope}: ok"
    return replace(
        decision,
        promote=decision.promote and not worse,
        reasons=[*decision.reasons, reason],
        stations_checked=len(checked),
        stations_blocking=worse,
        blocked_by=(*decision.blocked_by, *_failed(station=not worse)),
    )


def gate_decision(
    candidate: Scores,
    champion: Scores | None,
    rule: PromoteParams,
    rows: PairedRows | None = None,
    drift: dict[str, Any] | None = None,
    drift_mode: str = "annotate",
) -> Decision:
    """The whole promotion gate of params.yaml: the rule (`decide_promotion`), the drift
    verdict (`apply_drift`) and ``promote.gate``.

    - enforce: the rule and a blocking drift verdict decide.
    - dry_run: everything is computed and recorded as enforce would, and the challenger is
      promoted anyway; the reasons start with "dry run: would have rejected ..." (or
      "would have promoted"), the label is ``promoted-dry-run``. This is Databricks MLOps
      Stacks' ``dry_run`` validation mode: watch what a new gate would do before trusting it.
    - off: promoted without comparison (``champion`` is not needed, and ignored); the
      label is ``promoted-no-gate`` and the reasons say the gate was off.

    The leakage alarm and ``drift.mode: block`` block in enforce only; dry_run and off
    report them (dry_run: "would have rejected" and then the alarm's reason; off: "not
    applied: leakage alarm ..."). ``promote.gate`` is the one
    switch over everything that can block a promotion: an operator who sets dry_run or off
    has chosen to promote whatever the checks say (while calibrating a new rule, or to push
    a fix through), and a mode that promotes anyway except sometimes would surprise them,
    as MLOps Stacks' dry run treats every validation threshold alike. The alarm is not
    lost: it is logged as a warning and stays in the reasons, tags and history.
    """
    if rule.gate == "off":
        reasons = ["gate off (promote.gate: off): promoted without comparison to the champion"]
        if leak := _leakage(candidate, rule):
            reasons.append(f"not applied: {leak}")
        decision = apply_drift(Decision(True, reasons, gate="off"), drift, "annotate")
    else:
        verdict = apply_drift(decide_promotion(candidate, champion, rule, rows), drift, drift_mode)
        verdict = replace(verdict, verdict=verdict.promote)
        if rule.gate == "enforce":
            return verdict
        head = "would have promoted" if verdict.promote else "would have rejected"
        decision = replace(
            verdict,
            promote=True,
            gate="dry_run",
            reasons=[f"dry run: {head}; promoted anyway (promote.gate: dry_run)", *verdict.reasons],
        )
    if leak := _leakage(candidate, rule):
        log.warning("promote.gate %s: promoted despite the %s", rule.gate, leak)
    return decision


def model_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


def predict_version(name: str, version: str, test: pd.DataFrame) -> RowPredictions:
    """Load a registered version once and predict ``test``: per-row probability, the
    version's own tuned threshold, the labels and the stations."""
    import mlflow.pyfunc

    from raincast.features import label_vector

    model = mlflow.pyfunc.load_model(model_uri(name, version))
    out = model.predict(test.drop(columns=["RainTomorrow", "source"], errors="ignore"))
    return RowPredictions(
        labels=label_vector(test),
        probability=out["probability"].to_numpy(dtype=float),
        threshold=float(out["threshold"].iloc[0]),
        location=test["Location"].astype(str).to_numpy(),
    )


def score_predictions(version: str, rows: RowPredictions) -> Scores:
    """``Scores`` of one model's per-row predictions, at its own threshold."""
    from raincast.models.metrics import classification_metrics

    m = classification_metrics(rows.labels, rows.probability, rows.threshold)
    return Scores(version, m["f1"], m["roc_auc"], rows.threshold)


def score_version(name: str, version: str, test: pd.DataFrame) -> Scores:
    """Load a registered version and score it on ``test`` at its own tuned threshold."""
    return score_predictions(version, predict_version(name, version, test))


def alias_version(client: MlflowClient, name: str, alias: str) -> str | None:
    """Version behind ``alias``, or None when the alias (or the model) does not exist."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def apply_drift(decision: Decision, drift: dict[str, Any] | None, mode: str) -> Decision:
    """Record the drift verdict of the candidate's data with the decision; in mode
    ``block`` a drifted dataset also blocks the promotion."""
    if not drift:
        return decision
    share, cols = float(drift["drift_share"]), list(drift.get("drifted_columns", []))
    note = f"drift share {share:.2f} ({', '.join(cols) or 'no column'} drifted)"
    if drift.get("drift_detected") and mode == "block" and decision.promote:
        blocked = f"{note}: blocked by drift.mode=block"
        return replace(
            decision,
            promote=False,
            reasons=[*decision.reasons, blocked],
            blocked_by=(*decision.blocked_by, "drift"),
        )
    return replace(decision, reasons=[*decision.reasons, note])


def decision_tags(
    decision: Decision, cand: Scores, champ: Scores | None, drift: dict[str, Any] | None = None
) -> dict[str, str]:
    tags = {
        "promotion.decision": decision.label,
        "promotion.gate": decision.gate,
        "promotion.gate_verdict": _verdict_text(decision.verdict),
        "promotion.reasons": " | ".join(decision.reasons)[:4900],
        "promotion.candidate_f1": f"{cand.f1:.6f}",
        "promotion.candidate_auc": f"{cand.roc_auc:.6f}",
    }
    if decision.f1_gain is not None and decision.auc_gain is not None:
        tags |= {
            "promotion.f1_gain_ci": str(decision.f1_gain),
            "promotion.auc_gain_ci": str(decision.auc_gain),
        }
    if decision.stations_checked is not None:
        tags["promotion.stations_checked"] = str(decision.stations_checked)
        tags["promotion.station_auc_drops"] = (
            ", ".join(str(s) for s in decision.stations_blocking) or "none"
        )[:4900]
    if champ is not None:
        tags |= {
            "promotion.champion_version": champ.version,
            "promotion.champion_f1": f"{champ.f1:.6f}",
            "promotion.champion_auc": f"{champ.roc_auc:.6f}",
        }
    if drift:
        tags |= {
            "promotion.drift_share": f"{float(drift['drift_share']):.4f}",
            "promotion.drift_detected": str(bool(drift.get("drift_detected"))).lower(),
            "promotion.drifted_columns": ",".join(drift.get("drifted_columns", []))[:4900],
        }
    return tags


def _verdict_text(verdict: bool | None) -> str:
    return "not run" if verdict is None else "promote" if verdict else "reject"


def decision_extra(decision: Decision) -> dict[str, Any]:
    """What the history's ``extra`` column keeps of a decision beyond its label: the gate,
    its verdict, the intervals and the stations that blocked."""
    extra: dict[str, Any] = {"gate": decision.gate, "gate_verdict": _verdict_text(decision.verdict)}
    for key, ci in (("f1_gain", decision.f1_gain), ("auc_gain", decision.auc_gain)):
        if ci is not None:
            extra[key] = asdict(ci)
    if decision.stations_checked is not None:
        extra["stations_checked"] = decision.stations_checked
        extra["stations_blocking"] = [asdict(s) for s in decision.stations_blocking]
    return extra


def resolve_stage(label: str) -> str | None:
    """Alias for a stage name (Staging/Production/Archived) or a custom label."""
    key = label.strip().lower()
    if key in STAGE_ALIASES:
        return STAGE_ALIASES[key]
    if not _ALIAS_RE.match(key) or (key.startswith("v") and key[1:].isdigit()) or key == "latest":
        raise ValueError(f"{label!r} is not a valid alias (lowercase letters, digits, - and _)")
    return key


def scores_dict(s: Scores | None) -> dict[str, object] | None:
    return None if s is None else asdict(s)
