"""`raincast registry list|stage|history`: the model registry's versions, aliases and
recorded decisions (`raincast rollback` moves the champion back)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from raincast.cli._common import data_errors, fail, setup

if TYPE_CHECKING:
    from raincast.data.champions import ChampionSpan

app = typer.Typer(
    help="Inspect and move registry aliases (stage names map to aliases).", no_args_is_help=True
)


@app.command("list")
def registry_list() -> None:
    """Versions with their aliases, decision and test scores."""
    from raincast.models import tracking

    settings, _ = setup()
    client = tracking.configure(settings)
    versions = client.search_model_versions(f"name='{settings.model_name}'")
    for v in sorted(versions, key=lambda v: int(v.version)):
        t = v.tags
        typer.echo(
            f"v{v.version:>4}  aliases={','.join(v.aliases) or '-':<22} "
            f"decision={t.get('promotion.decision', '-'):<9} "
            f"f1={t.get('promotion.candidate_f1', '-')[:6]} "
            f"auc={t.get('promotion.candidate_auc', '-')[:6]}"
        )


@app.command("stage")
def registry_stage(
    version: Annotated[str, typer.Argument(help="Model version.")],
    stage: Annotated[
        str, typer.Argument(help="Production | Staging | Archived | None | a custom label.")
    ],
) -> None:
    """Stage vocabulary: Production -> champion, Staging -> challenger, Archived -> no alias."""
    from mlflow.exceptions import MlflowException

    from raincast.pipeline.aliases import move_alias

    settings, _ = setup()
    try:
        alias = move_alias(settings, version, stage)
    except (ValueError, MlflowException) as err:
        raise fail(str(err)) from err
    typer.echo(f"version {version}: {stage} -> alias {alias or '(none)'}")


@app.command("history")
def registry_history() -> None:
    """Which version was champion from when to when, then every recorded decision, oldest
    first."""
    from raincast.data import store
    from raincast.data.champions import champion_spans

    settings, _ = setup()
    with data_errors(settings):
        df = store.read_history(store.connect(settings.raw_store_url), settings.model_name)
    if df.empty:
        typer.echo("no decisions recorded")
        return
    typer.echo("champion spans (UTC)")
    typer.echo(spans_table(champion_spans(df)))
    typer.echo("\ndecisions")
    cols = [
        "decided_at",
        "action",
        "decision",
        "candidate_version",
        "champion_before",
        "champion_after",
        "candidate_f1",
        "champion_f1",
        "reasons",
    ]
    typer.echo(df[cols].to_string(index=False))


def spans_table(spans: list[ChampionSpan]) -> str:
    """The spans as a text table (UTC); "now" ends the open one."""
    import pandas as pd

    if not spans:
        return "no champion yet"
    second = "%Y-%m-%d %H:%M:%S"
    rows = [
        {
            "version": s.version,
            "from": s.start.strftime(second),
            "to": "now" if s.end is None else s.end.strftime(second),
            "decided_by": s.decided_by,
        }
        for s in spans
    ]
    return pd.DataFrame(rows).to_string(index=False)
