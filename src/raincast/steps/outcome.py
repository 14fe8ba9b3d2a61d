"""What the promote step ended with, importable without MLflow or scikit-learn (a no-op
`raincast run` reports it from the store alone, see `raincast.pipeline.cycle`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from raincast.models.registry import Decision, Scores


@dataclass(frozen=True)
class PromotionOutcome:
    candidate: Scores | None
    champion_before: Scores | None
    decision: Decision | None
    champion_version: str | None
    skipped: str | None = None  # why nothing was decided (already decided / already champion)
