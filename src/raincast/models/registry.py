"""Registry decisions: the promotion rule, serialised alias moves, rollback and stage names.

The one home of the alias names (`CHAMPION`, `CHALLENGER`). scikit-learn and MLflow's
model loading are imported by `score_version` alone, so a step that only needs a name or
an alias lookup (the drift stage) does not pay for them.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from mlflow.exceptions import MlflowException

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

    @property
    def label(self) -> str:
        return "promoted" if self.promote else "rejected"


def decide_promotion(candidate: Scores, champion: Scores | None, rule: PromoteParams) -> Decision:
    """The promotion rule of params.yaml, as a pure function.

    Leakage alarm first (blocks even a first model), then first-model, then F1 gain with
    an AUC guardrail. A tie is not a win.
    """
    if candidate.roc_auc > rule.leakage_auc:
        return Decision(
            False,
            [
                f"leakage alarm: ROC AUC {candidate.roc_auc:.4f} > {rule.leakage_auc} "
                "is implausibly high"
            ],
        )
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
    return Decision(f1_ok and auc_ok, reasons)


def model_uri(name: str, version: str) -> str:
    return f"models:/{name}/{version}"


def score_version(name: str, version: str, test: pd.DataFrame) -> Scores:
    """Load a registered version and score it on ``test`` at its own tuned threshold."""
    import mlflow.pyfunc

    from raincast.features import label_vector
    from raincast.models.metrics import classification_metrics

    model = mlflow.pyfunc.load_model(model_uri(name, version))
    out = model.predict(test.drop(columns=["RainTomorrow", "source"], errors="ignore"))
    threshold = float(out["threshold"].iloc[0])
    m = classification_metrics(label_vector(test), out["probability"].to_numpy(), threshold)
    return Scores(version, m["f1"], m["roc_auc"], threshold)


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
        return Decision(False, [*decision.reasons, f"{note}: blocked by drift.mode=block"])
    return Decision(decision.promote, [*decision.reasons, note])


def decision_tags(
    decision: Decision, cand: Scores, champ: Scores | None, drift: dict[str, Any] | None = None
) -> dict[str, str]:
    tags = {
        "promotion.decision": decision.label,
        "promotion.reasons": " | ".join(decision.reasons)[:4900],
        "promotion.candidate_f1": f"{cand.f1:.6f}",
        "promotion.candidate_auc": f"{cand.roc_auc:.6f}",
    }
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
