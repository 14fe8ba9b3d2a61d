"""The raw store: observations keyed by (Date, Location), quarantine, and decision history.

One SQLAlchemy schema serves SQLite (embedded) and PostgreSQL (production). Writes are
upserts that touch only rows whose values changed, so fetching a date twice is a no-op.

Guarantees (the README's data section states them for operators):

* One kind of provenance per store: ``store_state.source_kind`` is ``real`` or
  ``synthetic`` (``mixed`` only when the operator allowed it); a write of the other kind
  raises SourceMixError and writes nothing.
* An upsert never replaces an observed value with a missing one: such rows are refused
  with a reason (the caller quarantines them).
* Writers serialise: ``write_transaction`` is ``BEGIN IMMEDIATE`` on SQLite and takes a
  SHARE ROW EXCLUSIVE lock on ``observations`` on PostgreSQL, and the upsert reads the
  rows it compares against inside that transaction. ``store_lock`` is the store-level
  lock `validate` and `run` hold (advisory lock on PostgreSQL, file lock beside SQLite).
* Every change bumps ``store_state.revision`` in the same transaction, so the DVC
  manifest can be derived from the store alone and repaired after a crash.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from filelock import FileLock
from filelock import Timeout as FileLockTimeout

from raincast import schema

log = logging.getLogger(__name__)

MIXED = "mixed"

metadata = sa.MetaData()

_TEXT_COLS = (schema.LOCATION, *schema.DIRECTION_COLUMNS, schema.RAIN_TODAY, schema.RAIN_TOMORROW)

observations = sa.Table(
    "observations",
    metadata,
    sa.Column(schema.DATE, sa.Date, primary_key=True),
    sa.Column(schema.LOCATION, sa.String(40), primary_key=True),
    *(sa.Column(c, sa.Float) for c in schema.NUMERIC_COLUMNS),
    *(sa.Column(c, sa.String(8)) for c in schema.DIRECTION_COLUMNS),
    sa.Column(schema.RAIN_TODAY, sa.String(3)),
    sa.Column(schema.RAIN_TOMORROW, sa.String(3)),
    sa.Column("source", sa.String(40), nullable=False),
    sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(120), nullable=False),
)

quarantine = sa.Table(
    "quarantine",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("run_id", sa.String(120), nullable=False, index=True),
    sa.Column("quarantined_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("source", sa.String(40), nullable=False),
    sa.Column(schema.DATE, sa.String(40)),
    sa.Column(schema.LOCATION, sa.String(120)),
    sa.Column("check", sa.String(400), nullable=False),
    sa.Column("reason", sa.Text, nullable=False),
    sa.Column("payload", sa.Text, nullable=False),
)

validation_runs = sa.Table(
    "validation_runs",
    metadata,
    sa.Column("run_id", sa.String(120), primary_key=True),
    sa.Column("logical_date", sa.Date, nullable=False),
    sa.Column("source", sa.String(40), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("rows_in", sa.Integer, nullable=False),
    sa.Column("accepted", sa.Integer, nullable=False),
    sa.Column("quarantined", sa.Integer, nullable=False),
    sa.Column("inserted", sa.Integer, nullable=False),
    sa.Column("updated", sa.Integer, nullable=False),
    sa.Column("labels_filled", sa.Integer, nullable=False),
    sa.Column("worst_checks", sa.Text, nullable=False),
)

#: One row (id 1): what the store holds and how often it changed.
store_state = sa.Table(
    "store_state",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("source_kind", sa.String(16)),  # real | synthetic | mixed; null while empty
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("last_change_run_id", sa.String(120)),
    sa.Column("changed_at", sa.DateTime(timezone=True)),
)

promotion_history = sa.Table(
    "promotion_history",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("model_name", sa.String(120), nullable=False),
    sa.Column("action", sa.String(16), nullable=False),  # promote | rollback | alias
    sa.Column("decision", sa.String(16), nullable=False),  # promoted | rejected | moved
    sa.Column("candidate_version", sa.String(20), nullable=False),
    sa.Column("champion_before", sa.String(20)),
    sa.Column("champion_after", sa.String(20)),
    sa.Column("candidate_f1", sa.Float),
    sa.Column("candidate_auc", sa.Float),
    sa.Column("champion_f1", sa.Float),
    sa.Column("champion_auc", sa.Float),
    sa.Column("test_window", sa.String(40)),
    sa.Column("reasons", sa.Text, nullable=False),
    sa.Column("extra", sa.Text, nullable=False, server_default="{}"),
)


REFUSED_COLUMNS: list[str] = [schema.DATE, schema.LOCATION, "check", "reason"]


@dataclass(frozen=True)
class UpsertResult:
    inserted: int
    updated: int
    unchanged: int
    labels_filled: int
    #: Rows of the batch that were not written: Date, Location, check, reason.
    refused: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=REFUSED_COLUMNS), compare=False
    )

    @property
    def changed(self) -> bool:
        return bool(self.inserted or self.updated or self.labels_filled)


class SourceMixError(RuntimeError):
    """A write would put real and synthetic rows into one store; nothing was written."""


class StoreBusyError(RuntimeError):
    """Another process holds the store's write lock longer than we were willing to wait."""


def connect(url: str) -> sa.Engine:
    """Engine for the store; creates the tables (and SQLite's folder) on first use."""
    setup = ExitStack()
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        path = Path(url.removeprefix("sqlite:///"))
        path.parent.mkdir(parents=True, exist_ok=True)
        # Processes opening one new file at once take turns: in rollback mode (before the
        # switch to WAL) SQLite answers a lock upgrade that could deadlock with an
        # immediate "database is locked" instead of waiting out the busy timeout.
        setup.enter_context(FileLock(str(path.parent / f"{path.name}.setup.lock")))
    engine = sa.create_engine(url, future=True)
    if engine.dialect.name == "sqlite":

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _rec: Any) -> None:
            # WAL + a busy timeout let a reader (the API, a DAG task) run beside a writer.
            # The timeout first: switching a new file to WAL waits for a lock too.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA journal_mode=WAL")
            cur.close()

    # One writing transaction: two processes opening a new store at once take turns
    # instead of failing ("database is locked" on SQLite, a duplicate type on PostgreSQL).
    with setup, write_transaction(engine, lock_table=False) as conn:
        if conn.dialect.name == "postgresql":
            key = _advisory_key("raincast-schema")
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})
        metadata.create_all(conn)
        _add_new_columns(conn)
    return engine


def _add_new_columns(conn: sa.Connection) -> None:
    """Add nullable columns introduced after a table was created (forward-only, no data
    rewrite), so an existing store keeps working after an upgrade."""
    inspector = sa.inspect(conn)
    for table in metadata.sorted_tables:
        have = {c["name"] for c in inspector.get_columns(table.name)}
        for col in table.columns:
            if col.name not in have and col.nullable:
                kind = col.type.compile(dialect=conn.dialect)
                conn.execute(sa.text(f'ALTER TABLE {table.name} ADD COLUMN "{col.name}" {kind}'))


def _to_records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Frame rows as DB-ready dicts: ISO dates become `date`, NaN becomes None.

    Column-wise numpy conversion: ~10x faster than ``astype(object).where(...)`` per cell.
    """
    columns: dict[str, Any] = {}
    for col in df.columns:
        values = df[col].to_numpy(dtype=object, na_value=None)
        if col == schema.DATE:
            values = [date.fromisoformat(d) for d in values]
        elif df[col].dtype.kind == "f":
            values = [None if v is None else float(v) for v in values]
        columns[col] = values
    names = list(columns)
    return [dict(zip(names, row, strict=True)) for row in zip(*columns.values(), strict=True)]


def _bulk_insert(conn: sa.Connection, frame: pd.DataFrame, prov: dict[str, Any]) -> None:
    """INSERT observation rows (``frame`` has ISO string dates) with provenance ``prov``.

    On SQLite the DBAPI's executemany gets tuples already in SQLAlchemy's own SQLite
    storage formats (ISO dates, naive UTC timestamps): ~5x faster than Core's per-value
    processing for a 145k-row history load. Other databases go through Core.
    """
    if conn.dialect.name != "sqlite":
        conn.execute(sa.insert(observations), [{**r, **prov} for r in _to_records(frame)])
        return
    stamp = {
        k: v.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        if isinstance(v, datetime)
        else v
        for k, v in prov.items()
    }
    names = [*frame.columns, *stamp]
    columns = [frame[c].to_numpy(dtype=object, na_value=None) for c in frame.columns]
    columns += [[v] * len(frame) for v in stamp.values()]
    sql = "INSERT INTO observations ({}) VALUES ({})".format(
        ", ".join(f'"{n}"' for n in names), ", ".join("?" * len(names))
    )
    conn.exec_driver_sql(sql, list(zip(*columns, strict=True)))


Target = sa.Engine | sa.Connection


@contextmanager
def _begin(target: Target) -> Iterator[sa.Connection]:
    """The caller's connection (already in its transaction), or a new transaction."""
    if isinstance(target, sa.Connection):
        yield target
    else:
        with target.begin() as conn:
            yield conn


@contextmanager
def write_transaction(engine: sa.Engine, lock_table: bool = True) -> Iterator[sa.Connection]:
    """A transaction that writers of observations serialise on; commits on success.

    SQLite: ``BEGIN IMMEDIATE``, the database's write lock before the first read (pysqlite
    would otherwise run the reads outside any transaction and begin one only at the first
    write). PostgreSQL: a SHARE ROW EXCLUSIVE lock on ``observations``, which blocks other
    writers (readers go on) until commit. A second writer waits, then reads what the first
    one wrote. Other transactions of the store are left as they were.
    """
    with engine.connect() as conn, conn.begin():
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        elif conn.dialect.name == "postgresql" and lock_table:
            conn.execute(sa.text("LOCK TABLE observations IN SHARE ROW EXCLUSIVE MODE"))
        yield conn


@contextmanager
def _writing(target: Target) -> Iterator[sa.Connection]:
    if isinstance(target, sa.Connection):
        yield target
    else:
        with write_transaction(target) as conn:
            yield conn


def _read_observations(
    conn: sa.Connection, start: date | None = None, end: date | None = None
) -> pd.DataFrame:
    q = sa.select(observations)
    if start is not None:
        q = q.where(observations.c[schema.DATE] >= start)
    if end is not None:
        q = q.where(observations.c[schema.DATE] <= end)
    q = q.order_by(observations.c[schema.DATE], observations.c[schema.LOCATION])
    names = [c.name for c in observations.columns]
    if conn.dialect.name == "sqlite":
        # Raw rows skip per-value type processing; SQLite already stores ISO dates.
        compiled = q.compile(dialect=conn.dialect)
        params = tuple(compiled.construct_params()[k] for k in compiled.positiontup or ())
        raw = conn.exec_driver_sql(
            str(compiled), tuple(d.isoformat() if isinstance(d, date) else d for d in params)
        ).fetchall()
        df = pd.DataFrame.from_records(raw, columns=names)
        df["fetched_at"] = pd.to_datetime(df["fetched_at"])
    else:
        df = pd.DataFrame.from_records(conn.execute(q).all(), columns=names)
        if not df.empty:
            df[schema.DATE] = [d.isoformat() for d in df[schema.DATE]]
    if df.empty:
        return df.assign(**{schema.DATE: pd.Series(dtype=object)})
    for c in schema.NUMERIC_COLUMNS:
        df[c] = pd.to_numeric(df[c]).astype("float64")
    return df


def read_observations(
    target: Target, start: date | None = None, end: date | None = None
) -> pd.DataFrame:
    """Observations (schema columns + provenance), ordered by Date then Location."""
    if isinstance(target, sa.Connection):
        return _read_observations(target, start, end)
    with target.connect() as conn:
        return _read_observations(conn, start, end)


def _same(a: pd.DataFrame, b: pd.DataFrame, cols: list[str]) -> np.ndarray:
    """Row-wise equality with NaN == NaN."""
    eq = np.ones(len(a), dtype=bool)
    for c in cols:
        x, y = a[c].reset_index(drop=True), b[c].reset_index(drop=True)
        equal = (x == y).astype(object).fillna(False).astype(bool)
        eq &= (equal | (x.isna() & y.isna())).to_numpy(dtype=bool)
    return eq


def _keyed_update(columns: list[str]) -> sa.Update:
    """UPDATE of ``columns`` (bound as ``v_<col>``) for the row keyed by ``k_date``/``k_loc``."""
    return (
        sa.update(observations)
        .where(observations.c[schema.DATE] == sa.bindparam("k_date"))
        .where(observations.c[schema.LOCATION] == sa.bindparam("k_loc"))
        .values({c: sa.bindparam(f"v_{c}") for c in columns})
    )


def _kinds(sources: pd.Series) -> np.ndarray:
    """schema.source_kind of each source name (one call per distinct name)."""
    names = sources.astype(object).where(sources.notna(), "")
    lookup = {s: schema.source_kind(str(s)) for s in names.unique()}
    return names.map(lookup).to_numpy(dtype=object)


def next_day_labels(frame: pd.DataFrame) -> pd.Series:
    """RainTomorrow(D) = RainToday(D+1) of the same station, from the rows in ``frame``.

    Missing when D+1 is absent from ``frame`` or its rainfall is unknown. When ``frame``
    has a ``source`` column, D+1 must be of the same kind (real / synthetic) as D: a
    synthetic day never takes its label from a real one, nor the reverse.
    """
    key = [schema.DATE, schema.LOCATION]
    nxt = frame[[*key, schema.RAINFALL]].copy()
    nxt[schema.DATE] = (pd.to_datetime(nxt[schema.DATE]) - pd.Timedelta(days=1)).dt.strftime(
        "%Y-%m-%d"
    )
    nxt["label"] = schema.rain_flag(nxt[schema.RAINFALL])
    rows = frame[key].copy()
    if "source" in frame.columns:
        rows["_kind"] = nxt["_kind"] = _kinds(frame["source"])
        key = [*key, "_kind"]
    keyed = rows.merge(nxt[[*key, "label"]], on=key, how="left")
    return keyed["label"].astype(object).where(keyed["label"].notna(), None).set_axis(frame.index)


# --- provenance: one kind of data per store ----------------------------------------------


def _stored_sources(conn: sa.Connection) -> list[str]:
    q = sa.select(observations.c.source).distinct().order_by(observations.c.source)
    return [str(s) for s in conn.execute(q).scalars()]


def stored_kind(target: Target) -> str | None:
    """``real``, ``synthetic`` or ``mixed``: what the store holds (None when empty)."""
    with _begin(target) as conn:
        kind = conn.execute(
            sa.select(store_state.c.source_kind).where(store_state.c.id == 1)
        ).scalar_one_or_none()
        if kind:
            return str(kind)
        # A store written before store_state existed: look at its rows.
        kinds = {schema.source_kind(s) for s in _stored_sources(conn)}
    if not kinds:
        return None
    return kinds.pop() if len(kinds) == 1 else MIXED


def redacted_url(engine: sa.Engine) -> str:
    """The store's URL without its password, for messages."""
    return engine.url.render_as_string(hide_password=True)


def check_source_kind(target: Target, source: str, allow_mixed: bool = False) -> None:
    """Raise SourceMixError when ``source``'s kind differs from what the store holds."""
    want = schema.source_kind(source)
    with _begin(target) as conn:
        have = stored_kind(conn)
        if have is None or have == want or allow_mixed:
            return
        sources = _stored_sources(conn)
        url = redacted_url(conn.engine)
    raise SourceMixError(
        f"the store {url} holds {have} observations (source: {', '.join(sources)}); "
        f"refusing to add {want} rows from {source!r}: one store holds one kind of data. "
        f"Give {want} runs their own store (a separate RAINCAST_HOME, e.g. "
        f"RAINCAST_HOME=var-{want}, or RAINCAST_STORE_URL), start over with `make clean` "
        "(embedded store), or set RAINCAST_ALLOW_MIXED_SOURCES=1 to mix them on purpose"
    )


@dataclass(frozen=True)
class StoreState:
    source_kind: str | None
    revision: int
    last_change_run_id: str | None


def read_state(target: Target) -> StoreState:
    """The store's kind and change counter (revision 0 for a store never written)."""
    with _begin(target) as conn:
        row = conn.execute(sa.select(store_state).where(store_state.c.id == 1)).first()
        kind = stored_kind(conn)
    if row is None:
        return StoreState(kind, 0, None)
    return StoreState(kind, int(row.revision), row.last_change_run_id)


def _record_change(conn: sa.Connection, kind: str, run_id: str) -> None:
    """Bump the revision and set the kind, in the caller's write transaction."""
    now = datetime.now(UTC)
    done = conn.execute(
        sa.update(store_state)
        .where(store_state.c.id == 1)
        .values(
            source_kind=kind,
            revision=store_state.c.revision + 1,
            last_change_run_id=run_id,
            changed_at=now,
        )
    )
    if done.rowcount == 0:
        conn.execute(
            sa.insert(store_state),
            [
                {
                    "id": 1,
                    "source_kind": kind,
                    "revision": 1,
                    "last_change_run_id": run_id,
                    "changed_at": now,
                }
            ],
        )


# --- upserts -----------------------------------------------------------------------------


@dataclass(frozen=True)
class UpsertPlan:
    """What an upsert will write, worked out inside the write transaction."""

    source: str
    kind_after: str
    to_insert: pd.DataFrame
    to_update: pd.DataFrame
    relabel: list[tuple[str, str, str | None]]
    unchanged: int
    labels_filled: int
    refused: pd.DataFrame

    def result(self) -> UpsertResult:
        return UpsertResult(
            len(self.to_insert),
            len(self.to_update),
            self.unchanged,
            self.labels_filled,
            self.refused,
        )


def _erasures(merged: pd.DataFrame, is_new: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """Rows that would turn a stored observed value into a missing one, and why."""
    erased = {
        c: ~is_new & merged[f"{c}_old"].notna().to_numpy() & merged[c].isna().to_numpy()
        for c in schema.OBSERVED_COLUMNS
    }
    mask = np.logical_or.reduce(list(erased.values()))
    reasons = [
        "would replace stored "
        + ", ".join(c for c in schema.OBSERVED_COLUMNS if erased[c][i])
        + " with missing values; the stored row is kept"
        for i in np.flatnonzero(mask)
    ]
    return mask, reasons


def plan_upsert(
    conn: sa.Connection, batch: pd.DataFrame, source: str, allow_mixed: bool = False
) -> UpsertPlan:
    """Work out an upsert of ``batch`` against the rows ``conn`` sees (call it inside
    ``write_transaction``, so nobody writes between this read and the write).

    New (Date, Location) rows are inserted, changed rows updated, labels back-filled.
    A row that would replace a stored observed value with a missing one is refused (see
    ``UpsertPlan.refused``), and so the whole batch when it would mix real and
    synthetic data (SourceMixError) unless ``allow_mixed``.
    """
    check_source_kind(conn, source, allow_mixed)
    have, kind = stored_kind(conn), schema.source_kind(source)
    kind_after = kind if have in (None, kind) else MIXED
    key = [schema.DATE, schema.LOCATION]
    value_cols = [c for c in schema.COLUMNS if c not in (*key, schema.RAIN_TOMORROW)]
    empty = pd.DataFrame(columns=list(schema.COLUMNS))
    no_refusals = pd.DataFrame(columns=REFUSED_COLUMNS)
    if batch.empty:
        return UpsertPlan(source, kind_after, empty, empty, [], 0, 0, no_refusals)
    batch = batch.drop_duplicates(key, keep="last").reset_index(drop=True)
    batch[schema.RAIN_TODAY] = schema.rain_flag(batch[schema.RAINFALL])
    lo = date.fromisoformat(batch[schema.DATE].min())
    hi = date.fromisoformat(batch[schema.DATE].max())
    # One read covers the batch and its neighbour days, whose labels the batch can change.
    existing = _read_observations(conn, lo - timedelta(days=1), hi + timedelta(days=1))
    if existing.empty:
        existing = pd.DataFrame(columns=[*key, *value_cols, schema.RAIN_TOMORROW, "source"])

    def merge(frame: pd.DataFrame) -> pd.DataFrame:
        return frame.merge(
            existing[[*key, *value_cols]], on=key, how="left", suffixes=("", "_old"), indicator=True
        )

    merged = merge(batch)
    erase, reasons = _erasures(merged, (merged["_merge"] == "left_only").to_numpy())
    refused = batch.loc[erase, key].assign(check="erase:stored", reason=reasons)
    if erase.any():
        batch = batch.loc[~erase].reset_index(drop=True)
        merged = merge(batch)
    is_new = (merged["_merge"] == "left_only").to_numpy()
    old = merged[[f"{c}_old" for c in value_cols]].set_axis(value_cols, axis=1)
    same = _same(merged[value_cols], old, value_cols)

    # State after the write, to derive every label the batch can affect.
    in_batch = existing.set_index(key).index.isin(batch.set_index(key).index)
    after = pd.concat(
        [
            existing.loc[~in_batch, [*key, schema.RAINFALL, schema.RAIN_TOMORROW, "source"]],
            batch[[*key, schema.RAINFALL]]
            .assign(source=source)
            .merge(existing[[*key, schema.RAIN_TOMORROW]], on=key, how="left"),
        ],
        ignore_index=True,
    )
    after["label"] = next_day_labels(after)
    after = after[after[schema.DATE] <= hi.isoformat()].set_index(key)
    stored = (
        after[schema.RAIN_TOMORROW].astype(object).where(after[schema.RAIN_TOMORROW].notna(), None)
    )
    label_changed = ~_same(stored.to_frame("x"), after["label"].to_frame("x"), ["x"])

    to_insert = batch.loc[is_new].assign(**{schema.RAIN_TOMORROW: None})
    if len(to_insert):
        to_insert[schema.RAIN_TOMORROW] = (
            after["label"].reindex(pd.MultiIndex.from_frame(to_insert[key])).to_numpy()
        )
    to_update = batch.loc[~is_new & ~same]
    new_keys = set(zip(to_insert[schema.DATE], to_insert[schema.LOCATION], strict=True))
    relabel = [
        (d, loc, lab)
        for (d, loc), lab in after.loc[label_changed, "label"].items()
        if (d, loc) not in new_keys
    ]
    filled = int(label_changed.sum()) - int(after.loc[label_changed, "label"].isna().sum())
    return UpsertPlan(
        source,
        kind_after,
        to_insert,
        to_update,
        relabel,
        int(same[~is_new].sum()),
        max(filled, 0),
        refused.reset_index(drop=True),
    )


def apply_upsert(conn: sa.Connection, plan: UpsertPlan, run_id: str) -> UpsertResult:
    """Write ``plan`` (from ``plan_upsert`` on the same connection and transaction)."""
    result = plan.result()
    if not result.changed:
        return result
    key = (schema.DATE, schema.LOCATION, schema.RAIN_TOMORROW)
    value_cols = [c for c in schema.COLUMNS if c not in key]
    prov = {"source": plan.source, "fetched_at": datetime.now(UTC), "run_id": run_id}
    if len(plan.to_insert):
        _bulk_insert(conn, plan.to_insert, prov)
    if len(plan.to_update):
        stmt = _keyed_update([*value_cols, *prov])
        recs = [
            {
                "k_date": r[schema.DATE],
                "k_loc": r[schema.LOCATION],
                **{f"v_{c}": r[c] for c in value_cols},
                **{f"v_{k}": v for k, v in prov.items()},
            }
            for r in _to_records(plan.to_update)
        ]
        conn.execute(stmt, recs)
    if plan.relabel:
        conn.execute(
            _keyed_update([schema.RAIN_TOMORROW]),
            [
                {"k_date": date.fromisoformat(d), "k_loc": loc, f"v_{schema.RAIN_TOMORROW}": lab}
                for d, loc, lab in plan.relabel
            ],
        )
    _record_change(conn, plan.kind_after, run_id)
    return result


def upsert_observations(
    target: Target,
    batch: pd.DataFrame,
    source: str,
    run_id: str,
    *,
    allow_mixed: bool = False,
) -> UpsertResult:
    """Insert new (Date, Location) rows, update rows whose values changed, back-fill labels.

    ``batch`` holds accepted, conformed rows. Its ``RainTomorrow`` is ignored: labels are
    derived here from ``Rainfall`` (RainToday) and the next day's row (RainTomorrow), so
    the arrival of D+1 fills RainTomorrow(D) and a re-fetch of D changes nothing. Rows
    that would erase stored observations are refused (``UpsertResult.refused``); a batch
    of the other kind than the store's raises SourceMixError. ``target`` is an engine
    (one write transaction) or a connection inside the caller's ``write_transaction``.
    """
    with _writing(target) as conn:
        return apply_upsert(conn, plan_upsert(conn, batch, source, allow_mixed), run_id)


def write_quarantine(target: Target, rows: pd.DataFrame, source: str, run_id: str) -> None:
    """Keep every rejected row with its reason; a rerun of the same run id replaces its rows."""
    with _begin(target) as conn:
        conn.execute(sa.delete(quarantine).where(quarantine.c.run_id == run_id))
        if rows.empty:
            return
        now = datetime.now(UTC)
        recs = rows.astype(object).where(rows.notna(), None).to_dict("records")
        conn.execute(
            sa.insert(quarantine),
            [{**r, "run_id": run_id, "source": source, "quarantined_at": now} for r in recs],
        )


def record_validation_run(target: Target, **values: Any) -> None:
    """Insert or replace the summary row of one validation run."""
    values = {**values, "finished_at": datetime.now(UTC)}
    with _begin(target) as conn:
        conn.execute(sa.delete(validation_runs).where(validation_runs.c.run_id == values["run_id"]))
        conn.execute(sa.insert(validation_runs), [values])


def count_rows(target: Target, table: sa.Table = observations) -> int:
    with _begin(target) as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def date_range(target: Target) -> tuple[date, date] | None:
    """(first, last) observation date, or None for an empty store."""
    with _begin(target) as conn:
        lo, hi = conn.execute(
            sa.select(
                sa.func.min(observations.c[schema.DATE]), sa.func.max(observations.c[schema.DATE])
            )
        ).one()
    if lo is None:
        return None
    return (
        lo if isinstance(lo, date) else date.fromisoformat(str(lo)),
        hi if isinstance(hi, date) else date.fromisoformat(str(hi)),
    )


def newest_labelled_date(target: Target) -> date | None:
    """Newest observation date whose RainTomorrow is known, or None."""
    col = observations.c[schema.DATE]
    with _begin(target) as conn:
        hi = conn.execute(
            sa.select(sa.func.max(col)).where(observations.c[schema.RAIN_TOMORROW].isnot(None))
        ).scalar()
    return None if hi is None else as_date(hi)


def record_decision(engine: sa.Engine, **values: Any) -> None:
    """Append one registry decision (promotion, rejection, rollback, alias move)."""
    values = {**values, "decided_at": datetime.now(UTC)}
    values["extra"] = json.dumps(values.get("extra") or {}, default=str)
    with engine.begin() as conn:
        conn.execute(sa.insert(promotion_history), [values])


def read_history(target: Target, model_name: str) -> pd.DataFrame:
    q = (
        sa.select(promotion_history)
        .where(promotion_history.c.model_name == model_name)
        .order_by(promotion_history.c.id)
    )
    with _begin(target) as conn:
        return pd.DataFrame(
            conn.execute(q).mappings().all(), columns=[c.name for c in promotion_history.columns]
        )


# --- locks ---------------------------------------------------------------------------------


def _advisory_key(name: str) -> int:
    # A hash of the whole name: a prefix would give every "raincast-..." lock one key.
    digest = hashlib.blake2b(name.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFFFFFFFFFFFFFF


@contextmanager
def exclusive_lock(
    engine: sa.Engine,
    name: str,
    lock_dir: Path,
    timeout_s: float = 300,
    holder: str | None = None,
) -> Iterator[None]:
    """Serialise a critical section across processes (and hosts, on PostgreSQL).

    PostgreSQL: a session advisory lock, so tasks on different machines agree; taken on
    an autocommit connection, so no transaction stays open while it is held. SQLite (one
    machine by construction): a file lock in ``lock_dir``. ``holder`` describes the
    owner for a waiter's message (PostgreSQL application_name / a ``.holder`` file).
    A timeout raises filelock.Timeout (SQLite) or OperationalError (PostgreSQL, 55P03).
    """
    if engine.dialect.name == "postgresql":
        key = _advisory_key(name)
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT")
            if timeout_s <= 0:
                if not conn.execute(
                    sa.text("SELECT pg_try_advisory_lock(:k)"), {"k": key}
                ).scalar_one():
                    raise sa.exc.OperationalError(
                        "pg_try_advisory_lock", {"k": key}, _LockNotAvailable()
                    )
            else:
                conn.execute(
                    sa.text("SELECT set_config('lock_timeout', :t, false)"),
                    {"t": f"{max(1, int(timeout_s * 1000))}ms"},
                )
                try:
                    conn.execute(sa.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                finally:
                    conn.execute(sa.text("RESET lock_timeout"))
            if holder:
                conn.execute(
                    sa.text("SELECT set_config('application_name', :h, false)"),
                    {"h": holder[:63]},
                )
            try:
                yield
            finally:
                conn.execute(sa.text("SELECT pg_advisory_unlock(:k)"), {"k": key})
                if holder:
                    conn.execute(sa.text("RESET application_name"))
    else:
        lock_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(str(lock_dir / f"{name}.lock"), timeout=timeout_s):
            if holder:
                (lock_dir / f"{name}.holder").write_text(holder + "\n")
            yield


class _LockNotAvailable(Exception):
    """Stands in for psycopg2's LockNotAvailable when a try-lock finds the lock taken."""

    pgcode = "55P03"


def _is_lock_timeout(err: BaseException) -> bool:
    return isinstance(err, FileLockTimeout) or (
        isinstance(err, sa.exc.OperationalError) and getattr(err.orig, "pgcode", None) == "55P03"
    )


STORE_LOCK = "raincast-store"
_held_store_locks: ContextVar[frozenset[str]] = ContextVar(
    "raincast_held_store_locks", default=frozenset()
)


def _store_lock_location(engine: sa.Engine, lock_dir: Path) -> tuple[Path, str]:
    """A SQLite store's lock lives beside its database file (every home that points at
    the file shares it); anything else uses ``lock_dir``."""
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database and database != ":memory:":
        path = Path(database)
        return path.parent, f"{path.name}.writer"
    return lock_dir, STORE_LOCK


def _lock_holder(engine: sa.Engine, lock_dir: Path) -> str | None:
    """Who holds the store lock, as its holder described itself (None if unknown)."""
    try:
        if engine.dialect.name == "postgresql":
            key = _advisory_key(STORE_LOCK)
            with engine.connect() as conn:
                row = conn.execute(
                    sa.text(
                        "SELECT a.application_name, a.pid FROM pg_locks l "
                        "JOIN pg_stat_activity a ON a.pid = l.pid "
                        "WHERE l.locktype = 'advisory' AND l.granted "
                        "AND l.classid::bigint = :hi AND l.objid::bigint = :lo"
                    ),
                    {"hi": key >> 32, "lo": key & 0xFFFFFFFF},
                ).first()
            if row is None:
                return None
            return row.application_name or f"PostgreSQL backend pid {row.pid}"
        directory, name = _store_lock_location(engine, lock_dir)
        return (directory / f"{name}.holder").read_text().strip() or None
    except (OSError, sa.exc.SQLAlchemyError):
        return None


@contextmanager
def store_lock(engine: sa.Engine, lock_dir: Path, timeout_s: float, purpose: str) -> Iterator[None]:
    """The store-level lock that `validate` and `run` hold while they write.

    PostgreSQL: an advisory lock (every host agrees); SQLite: a file lock beside the
    database. A second caller waits up to ``timeout_s`` (0: not at all), then gets a
    StoreBusyError naming the holder. Re-entrant within one thread (`run` holds it
    around the `validate` it calls).
    """
    url = redacted_url(engine)
    held = _held_store_locks.get()
    if url in held:
        yield
        return
    directory, name = _store_lock_location(engine, lock_dir)
    holder = (
        f"raincast {purpose} (pid {os.getpid()} on {socket.gethostname()}, "
        f"since {datetime.now(UTC):%Y-%m-%d %H:%M:%S} UTC)"
    )
    stack = ExitStack()
    started = time.monotonic()
    try:
        stack.enter_context(exclusive_lock(engine, name, directory, timeout_s, holder=holder))
    except (FileLockTimeout, sa.exc.OperationalError) as err:
        if not _is_lock_timeout(err):
            raise
        who = _lock_holder(engine, lock_dir) or "another raincast validate/run"
        raise StoreBusyError(
            f"the store {url} is busy: {who} holds its write lock "
            f"(waited {time.monotonic() - started:.0f} s); try again when it has finished, "
            "or set RAINCAST_STORE_LOCK_TIMEOUT_S to wait longer"
        ) from None
    waited = time.monotonic() - started
    if waited > 1:
        log.info("waited %.1f s for the store lock of %s", waited, url)
    token = _held_store_locks.set(held | {url})
    try:
        with stack:
            yield
    finally:
        _held_store_locks.reset(token)


# --- batch predictions and their live scores ---------------------------------------------

predictions = sa.Table(
    "predictions",
    metadata,
    sa.Column("target_date", sa.Date, primary_key=True),
    sa.Column(schema.LOCATION, sa.String(40), primary_key=True),
    sa.Column("model_name", sa.String(120), primary_key=True),
    sa.Column("model_version", sa.String(20), primary_key=True),
    sa.Column("observation_date", sa.Date, nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("label", sa.String(3), nullable=False),
    sa.Column("threshold", sa.Float),
    sa.Column("predicted_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(120), nullable=False),
)


def _window_metrics() -> list[sa.Column[float]]:
    """The metric columns of a scored window, shared by live and replayed scores (a metric
    added here reaches both tables). roc_auc is null when the window holds one class."""
    names = ("f1", "precision", "recall", "roc_auc", "base_rate", "predicted_positive_rate",
             "mean_probability")  # fmt: skip
    return [sa.Column(name, sa.Float) for name in names]


live_scores = sa.Table(
    "live_scores",
    metadata,
    sa.Column("as_of_date", sa.Date, primary_key=True),
    sa.Column("window_days", sa.Integer, primary_key=True),
    sa.Column("model_name", sa.String(120), primary_key=True),
    sa.Column("window_start", sa.Date, nullable=False),
    sa.Column("model_versions", sa.String(400), nullable=False),  # comma-separated, ascending
    sa.Column("n_scored", sa.Integer, nullable=False),
    sa.Column("n_pending", sa.Integer, nullable=False),
    *_window_metrics(),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(120), nullable=False),
    sa.Column("calibration_error", sa.Float),  # expected calibration error, 10 bins
)

_PREDICTION_KEY = ("target_date", schema.LOCATION, "model_name", "model_version")
_PREDICTION_VALUES = ("observation_date", "probability", "label", "threshold")


def as_date(value: Any) -> date:
    """A stored date as ``date``: dates as they are, a datetime's day, ISO text's first 10
    characters (SQLite hands dates back as text)."""
    if isinstance(value, datetime):
        return value.date()
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def _frame_of(conn: sa.Connection, q: sa.Select, table: sa.Table) -> pd.DataFrame:
    """Rows of ``q`` as a frame with ``table``'s columns; Date columns as ISO strings."""
    df = pd.DataFrame(conn.execute(q).mappings().all(), columns=[c.name for c in table.columns])
    for c in table.columns:
        if isinstance(c.type, sa.Date) and not df.empty:
            df[c.name] = [None if v is None else as_date(v).isoformat() for v in df[c.name]]
    return df


def upsert_predictions(engine: sa.Engine, rows: list[dict[str, Any]]) -> UpsertResult:
    """Insert new predictions, update those whose values changed, leave the rest untouched.

    Keyed by (target_date, Location, model_name, model_version): re-predicting a day with
    the same champion on the same observations writes nothing, not even ``predicted_at``.
    """
    if not rows:
        return UpsertResult(0, 0, 0, 0)
    key = [predictions.c[k] for k in _PREDICTION_KEY]
    targets = sorted({r["target_date"] for r in rows})
    inserted = updated = unchanged = 0
    with engine.begin() as conn:
        found = conn.execute(
            sa.select(*key, *(predictions.c[v] for v in _PREDICTION_VALUES)).where(
                predictions.c.target_date.in_(targets)
            )
        ).all()
        existing = {(as_date(r[0]), *r[1:4]): tuple(r[4:]) for r in found}
        new, changed = [], []
        for r in rows:
            old = existing.get(tuple(r[k] for k in _PREDICTION_KEY))
            if old is None:
                new.append(r)
            elif _same_prediction(old, tuple(r[v] for v in _PREDICTION_VALUES)):
                unchanged += 1
            else:
                changed.append(r)
        if new:
            conn.execute(sa.insert(predictions), new)
            inserted = len(new)
        if changed:
            stmt = (
                sa.update(predictions)
                .where(*(predictions.c[k] == sa.bindparam(f"k_{k}") for k in _PREDICTION_KEY))
                .values({c: sa.bindparam(f"v_{c}") for c in rows[0] if c not in _PREDICTION_KEY})
            )
            conn.execute(
                stmt,
                [
                    {f"{'k' if c in _PREDICTION_KEY else 'v'}_{c}": v for c, v in r.items()}
                    for r in changed
                ],
            )
            updated = len(changed)
    return UpsertResult(inserted, updated, unchanged, 0)


def _same_prediction(old: tuple[Any, ...], new: tuple[Any, ...]) -> bool:
    obs_old, p_old, label_old, thr_old = old
    obs_new, p_new, label_new, thr_new = new
    same_thr = (thr_old is None and thr_new is None) or (
        thr_old is not None and thr_new is not None and abs(thr_old - thr_new) <= 1e-12
    )
    return (
        as_date(obs_old) == as_date(obs_new)
        and abs(float(p_old) - float(p_new)) <= 1e-12
        and label_old == label_new
        and same_thr
    )


def read_predictions(
    target: Target,
    model_name: str | None = None,
    start: date | None = None,
    end: date | None = None,
) -> pd.DataFrame:
    """Predictions with ``start <= target_date <= end``, ordered by target date and station."""
    q = sa.select(predictions)
    if model_name is not None:
        q = q.where(predictions.c.model_name == model_name)
    if start is not None:
        q = q.where(predictions.c.target_date >= start)
    if end is not None:
        q = q.where(predictions.c.target_date <= end)
    q = q.order_by(
        predictions.c.target_date, predictions.c[schema.LOCATION], predictions.c.predicted_at
    )
    with _begin(target) as conn:
        return _frame_of(conn, q, predictions)


def upsert_live_scores(engine: sa.Engine, rows: list[dict[str, Any]]) -> None:
    """Insert or replace live-score rows keyed by (as_of_date, window_days, model_name)."""
    if not rows:
        return
    with engine.begin() as conn:
        for r in rows:
            conn.execute(
                sa.delete(live_scores)
                .where(live_scores.c.as_of_date == r["as_of_date"])
                .where(live_scores.c.window_days == r["window_days"])
                .where(live_scores.c.model_name == r["model_name"])
            )
        conn.execute(sa.insert(live_scores), rows)


def _read_scores(target: Target, table: sa.Table, model_name: str | None) -> pd.DataFrame:
    q = sa.select(table).order_by(table.c.as_of_date, table.c.window_days)
    if model_name is not None:
        q = q.where(table.c.model_name == model_name)
    with _begin(target) as conn:
        return _frame_of(conn, q, table)


def read_live_scores(target: Target, model_name: str | None = None) -> pd.DataFrame:
    """Live-score rows, ordered by as-of date then window length."""
    return _read_scores(target, live_scores, model_name)


# --- the replayed window: the champion's predictions for recent history, and their scores --
# Kept in their own tables so they can never mix with the live `predictions` / `live_scores`.

replayed_predictions = sa.Table(
    "replayed_predictions",
    metadata,
    sa.Column("target_date", sa.Date, primary_key=True),
    sa.Column(schema.LOCATION, sa.String(40), primary_key=True),
    sa.Column("model_name", sa.String(120), primary_key=True),
    sa.Column("model_version", sa.String(20), primary_key=True),
    sa.Column("observation_date", sa.Date, nullable=False),
    sa.Column("probability", sa.Float, nullable=False),
    sa.Column("label", sa.String(3), nullable=False),
    sa.Column("threshold", sa.Float),
    sa.Column("outcome", sa.String(3)),  # Yes / No from the store; null when unknown
    sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(120), nullable=False),
)

replayed_scores = sa.Table(
    "replayed_scores",
    metadata,
    sa.Column("as_of_date", sa.Date, primary_key=True),
    sa.Column("window_days", sa.Integer, primary_key=True),
    sa.Column("model_name", sa.String(120), primary_key=True),
    sa.Column("model_version", sa.String(20), primary_key=True),
    sa.Column("window_start", sa.Date, nullable=False),
    sa.Column("n_scored", sa.Integer, nullable=False),
    *_window_metrics(),
    sa.Column("calibration_error", sa.Float),
    sa.Column("scored_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("run_id", sa.String(120), nullable=False),
)

#: One row per replay that wrote a window (the newest one per model is the stored window).
replay_runs = sa.Table(
    "replay_runs",
    metadata,
    sa.Column("run_id", sa.String(120), primary_key=True),
    sa.Column("model_name", sa.String(120), nullable=False, index=True),
    sa.Column("model_version", sa.String(20), nullable=False),
    sa.Column("replayed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("first_observation_date", sa.Date, nullable=False),
    sa.Column("last_observation_date", sa.Date, nullable=False),
    sa.Column("days", sa.Integer, nullable=False),
    sa.Column("windows", sa.String(80), nullable=False),  # e.g. "7,30"
    sa.Column("n_predictions", sa.Integer, nullable=False),
    sa.Column("n_scored", sa.Integer, nullable=False),
    sa.Column("trained_through", sa.Date),  # last day the model learned from (null: unknown)
    sa.Column("overlaps_training", sa.Boolean, nullable=False),
    sa.Column("note", sa.Text, nullable=False),
)


def latest_replay_run(target: Target, model_name: str) -> dict[str, Any] | None:
    """The newest replay run of ``model_name`` (the window the tables hold), or None."""
    q = (
        sa.select(replay_runs)
        .where(replay_runs.c.model_name == model_name)
        .order_by(replay_runs.c.replayed_at.desc())
        .limit(1)
    )
    with _begin(target) as conn:
        row = conn.execute(q).mappings().first()
    return None if row is None else dict(row)


def replace_replayed_window(
    engine: sa.Engine,
    run: dict[str, Any],
    prediction_rows: list[dict[str, Any]],
    score_rows: list[dict[str, Any]],
) -> None:
    """Replace the model's replayed window (predictions + scores) and record the run, in
    one transaction: readers see the old window or the new one, never a mix."""
    name = run["model_name"]
    with engine.begin() as conn:
        for table in (replayed_predictions, replayed_scores):
            conn.execute(sa.delete(table).where(table.c.model_name == name))
        if prediction_rows:
            conn.execute(sa.insert(replayed_predictions), prediction_rows)
        if score_rows:
            conn.execute(sa.insert(replayed_scores), score_rows)
        # a run id given twice (`raincast replay --run-id`) records its latest window
        conn.execute(sa.delete(replay_runs).where(replay_runs.c.run_id == run["run_id"]))
        conn.execute(sa.insert(replay_runs), [run])


def read_replayed_predictions(target: Target, model_name: str | None = None) -> pd.DataFrame:
    """Replayed predictions, ordered by target date and station."""
    q = sa.select(replayed_predictions).order_by(
        replayed_predictions.c.target_date, replayed_predictions.c[schema.LOCATION]
    )
    if model_name is not None:
        q = q.where(replayed_predictions.c.model_name == model_name)
    with _begin(target) as conn:
        return _frame_of(conn, q, replayed_predictions)


def read_replayed_scores(target: Target, model_name: str | None = None) -> pd.DataFrame:
    """Replayed score rows, ordered by as-of date then window length."""
    return _read_scores(target, replayed_scores, model_name)


# --- drift results of every cycle ----------------------------------------------------------

drift_results = sa.Table(
    "drift_results",
    metadata,
    sa.Column("cycle_date", sa.Date, primary_key=True),
    sa.Column("run_id", sa.String(250), primary_key=True),
    sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("drift_share", sa.Float, nullable=False),
    sa.Column("n_drifted", sa.Integer, nullable=False),
    sa.Column("n_columns", sa.Integer, nullable=False),
    sa.Column("drifted_columns", sa.Text, nullable=False),  # JSON list of column names
    sa.Column("dataset_drift", sa.Boolean, nullable=False),
    sa.Column("share_threshold", sa.Float),
    sa.Column("reference_window", sa.String(40)),
    sa.Column("current_window", sa.String(40)),
)


def upsert_drift_result(engine: sa.Engine, row: dict[str, Any]) -> None:
    """Insert or replace the drift result of one cycle, keyed by (cycle_date, run_id):
    a rerun of the same cycle replaces its row instead of adding one."""
    with engine.begin() as conn:
        conn.execute(
            sa.delete(drift_results)
            .where(drift_results.c.cycle_date == row["cycle_date"])
            .where(drift_results.c.run_id == row["run_id"])
        )
        conn.execute(sa.insert(drift_results), [row])


def read_drift_results(target: Target) -> pd.DataFrame:
    """Drift results, oldest cycle first."""
    q = sa.select(drift_results).order_by(drift_results.c.cycle_date, drift_results.c.computed_at)
    with _begin(target) as conn:
        return _frame_of(conn, q, drift_results)
