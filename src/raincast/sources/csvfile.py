"""Sources backed by a weatherAUS-format CSV file: the whole file, or replayed a day at a time.

The file is read as text: every cell stays the string the file holds (``NA`` and empty
cells are missing) so that validation judges what was sent. A text value in a numeric
column, an impossible date or a line with too few or too many fields reaches validation
as it is and is quarantined there with its raw value; nothing is padded, coerced or
dropped on the way.
"""

from __future__ import annotations

import codecs
import csv
import logging
from dataclasses import dataclass
from datetime import date
from functools import cached_property
from pathlib import Path

import pandas as pd

from raincast import schema
from raincast.sources import SourceFileError

log = logging.getLogger(__name__)

#: Cells the Kaggle file (and R's write.csv) use for a missing value.
NA_VALUES = ("NA", "")
_GZIP_MAGIC = b"\x1f\x8b"
_ISO_DATE = r"\d{4}-\d{2}-\d{2}"
#: Columns some weatherAUS variants carry that must never be used (RISK_MM is the next
#: day's rain: it leaks the label).
_KNOWN_EXTRAS = {"RISK_MM": "the next day's rainfall, which leaks the label"}


@dataclass(frozen=True)
class _BadLine:
    number: int | None
    fields: int
    text: str


def _compression(path: Path) -> str | None:
    with path.open("rb") as fh:
        return "gzip" if fh.read(2) == _GZIP_MAGIC else None


def _header(path: Path, compression: str | None) -> list[str]:
    """The header line's column names (a BOM is dropped)."""
    import pyarrow as pa

    with pa.input_stream(str(path), compression=compression) as fh:
        head = fh.read(64 * 1024)
    text = codecs.getincrementaldecoder("utf-8-sig")(errors="strict").decode(head)
    if not text.strip():
        raise SourceFileError(f"{path} is empty: expected a weatherAUS CSV with a header line")
    return next(csv.reader([text.splitlines()[0]]))


def read_raw_csv(path: Path) -> tuple[pd.DataFrame, list[str]]:
    """Every row of a weatherAUS-format CSV (optionally gzipped) as text, and the names of
    columns outside the schema (ignored, reported by the caller).

    A line whose field count differs from the header's is kept as a row with its Date and
    Location (when present), every value missing, and ``schema.PARSE_PROBLEM`` /
    ``schema.RAW_RECORD`` saying what is wrong and what the line held.
    Raises SourceFileError, naming the file, for anything that is not such a CSV.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

    compression = _compression(path)
    what = "gzipped CSV" if compression else "CSV"
    try:
        names = _header(path, compression)
    except UnicodeDecodeError as err:
        raise SourceFileError(
            f"{path} is not a text {what} ({err.reason} at byte {err.start}): "
            "expected the weatherAUS CSV (the Kaggle 'Rain in Australia' download)"
        ) from None
    except (OSError, EOFError) as err:
        raise SourceFileError(
            f"{path} cannot be read as a {what} ({err}): the file is damaged or "
            "truncated; download it again"
        ) from None
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise SourceFileError(f"{path} repeats the column(s) {duplicated} in its header")
    missing = [c for c in schema.COLUMNS if c not in names]
    if missing:
        listed = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise SourceFileError(
            f"{path} lacks {len(missing)} of the {len(schema.COLUMNS)} weatherAUS columns "
            f"({listed}): expected the Kaggle 'Rain in Australia' layout "
            f"(the header starts {', '.join(names[:4])})"
        )
    bad: list[_BadLine] = []

    def on_bad_line(row: pacsv.InvalidRow) -> str:
        bad.append(_BadLine(row.number, int(row.actual_columns), str(row.text)))
        return "skip"

    try:
        with pa.input_stream(str(path), compression=compression) as fh:
            table = pacsv.read_csv(
                fh,
                # One thread: line numbers for bad lines, and faster on 2 busy cores.
                read_options=pacsv.ReadOptions(use_threads=False),
                parse_options=pacsv.ParseOptions(invalid_row_handler=on_bad_line),
                convert_options=pacsv.ConvertOptions(
                    column_types=dict.fromkeys(names, pa.string()),
                    null_values=list(NA_VALUES),
                    strings_can_be_null=True,
                    quoted_strings_can_be_null=True,
                ),
            )
    except (OSError, EOFError, pa.ArrowException) as err:
        raise SourceFileError(
            f"{path} cannot be read as a {what} ({str(err).splitlines()[0][:200]}): "
            "the file is damaged or truncated, or not a weatherAUS CSV; download it again"
        ) from None
    frame = table.to_pandas()
    unknown = [c for c in names if c not in schema.COLUMNS]
    if bad:
        frame = pd.concat([frame, _bad_rows(bad, names)], ignore_index=True)
    return frame, unknown


def _bad_rows(bad: list[_BadLine], names: list[str]) -> pd.DataFrame:
    """One row per line of the wrong length: only Date and Location (to find its batch and
    name it in the quarantine), the problem and the raw line."""
    rows = []
    for line in bad:
        fields = next(csv.reader([line.text]), [])
        row: dict[str, object] = dict.fromkeys(names)
        for col in (schema.DATE, schema.LOCATION):
            i = names.index(col)
            row[col] = fields[i] if i < len(fields) and fields[i] not in NA_VALUES else None
        where = f"line {line.number}" if line.number else "a line"
        row[schema.PARSE_PROBLEM] = f"{where} has {line.fields} fields, the header has {len(names)}"
        row[schema.RAW_RECORD] = line.text
        rows.append(row)
    return pd.DataFrame(rows, columns=[*names, schema.PARSE_PROBLEM, schema.RAW_RECORD])


class CsvSource:
    """Rows of a weatherAUS-format file (the Kaggle download) within the requested dates.

    The file's ``RainTomorrow`` is dropped: on day D it is not yet known, and the store
    back-fills it when D+1 arrives, exactly as for live sources.
    """

    name = "csv"

    def __init__(self, path: Path) -> None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(
                f"weatherAUS file not found: {path} (give the path after csv: / replay:)"
            )
        if not path.is_file():
            raise SourceFileError(f"{path} is not a file: expected a weatherAUS CSV")
        self.path = path
        self.unknown_columns: list[str] = []

    @cached_property
    def frame(self) -> pd.DataFrame:
        df, unknown = read_raw_csv(self.path)
        if df.empty:
            raise SourceFileError(
                f"{self.path} has a header but no data rows: nothing to fetch "
                "(is the download complete?)"
            )
        self.unknown_columns = unknown
        if unknown:
            notes = [f"{c} ({_KNOWN_EXTRAS[c]})" if c in _KNOWN_EXTRAS else c for c in unknown]
            log.warning(
                "%s: ignoring %d column(s) outside the weatherAUS schema: %s",
                self.path,
                len(unknown),
                ", ".join(notes),
            )
        df[schema.RAIN_TOMORROW] = None
        return df

    @cached_property
    def _valid_dates(self) -> pd.Series:
        """The Date of each row when it is a real ISO day (YYYY-MM-DD), else missing."""
        raw = self.frame[schema.DATE].astype("string")
        iso = raw.str.fullmatch(_ISO_DATE).fillna(False).astype(bool)
        parsed = pd.to_datetime(raw.where(iso), format="%Y-%m-%d", errors="coerce")
        return raw.where(parsed.notna())

    def first_date(self) -> date:
        """The oldest date in the file (where a history load starts)."""
        oldest = self._valid_dates.dropna().min()
        if pd.isna(oldest):
            raise SourceFileError(f"{self.path} has no row with a valid Date (YYYY-MM-DD)")
        return date.fromisoformat(str(oldest))

    def last_date(self) -> date:
        """The newest date in the file (the default logical date for csv/replay runs)."""
        newest = self._valid_dates.dropna().max()
        if pd.isna(newest):
            raise SourceFileError(f"{self.path} has no row with a valid Date (YYYY-MM-DD)")
        return date.fromisoformat(str(newest))

    def fetch(self, start: date, end: date) -> pd.DataFrame:
        if start > end:
            raise ValueError(f"start {start} is after end {end}")
        dates = self._valid_dates
        mask = ((dates >= start.isoformat()) & (dates <= end.isoformat())).fillna(False)
        if end >= self.last_date():
            # Rows without a valid date belong to no window. Rather than drop them
            # silently, the batch reaching the file's newest date carries them, so
            # validation quarantines them with their raw value and a reason.
            mask |= dates.isna()
        return self.frame.loc[mask.astype(bool).to_numpy()].reset_index(drop=True)


class ReplaySource(CsvSource):
    """A weatherAUS file replayed one logical date at a time (real history, no network)."""

    name = "replay"
