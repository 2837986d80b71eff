"""`neurolabel export`: the sidecar index as a dataset table, one row per labelled study.

Columns: study_instance_uid, accession_number, labels, probabilities, model, report_id, labelled_at
(with --all-history every labels row, current or not, plus current, superseded_at, superseded_reason).
JSON Lines keeps labels and probabilities as objects; CSV and Parquet flatten them to label_<key> and
prob_<key> columns in the label order of the contract. A file is written beside its target and renamed
into place, so a reader never sees half an export.
"""

from __future__ import annotations

import csv
import datetime as dt
import json
import os
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from daemon.labels import LABEL_KEYS
from daemon.store.database import Database
from daemon.store.schema import study_labels

FORMATS = ("csv", "jsonl", "parquet")
COLUMNS = ("study_instance_uid", "accession_number", "labels", "probabilities", "model", "report_id", "labelled_at")
HISTORY_COLUMNS = ("current", "superseded_at", "superseded_reason")
ROWS_PER_CHUNK = 10_000
PARQUET_MISSING = "Parquet export needs pyarrow: pip install 'neurolabel[export]'"


class ExportUnavailable(Exception):
    """The format needs a package that is not installed (the message says which)."""


def export_rows(database: Database, *, all_history: bool = False) -> Iterator[dict[str, Any]]:
    """Labels rows in study order (then oldest first), as dictionaries of COLUMNS (+ HISTORY_COLUMNS)."""
    query = sa.select(study_labels).order_by(study_labels.c.study_instance_uid, study_labels.c.id)
    if not all_history:
        query = query.where(study_labels.c.current.is_(True))
    with database.connect() as connection:
        for row in connection.execution_options(yield_per=ROWS_PER_CHUNK).execute(query):
            item: dict[str, Any] = {
                "study_instance_uid": row.study_instance_uid,
                "accession_number": row.accession_number,
                "labels": {key: int(row.labels[key]) for key in LABEL_KEYS},
                "probabilities": {key: float(row.probabilities[key]) for key in LABEL_KEYS},
                "model": row.model,
                "report_id": row.report_id,
                "labelled_at": _utc(row.labelled_at),
            }
            if all_history:
                item.update(
                    current=bool(row.current),
                    superseded_at=_utc(row.superseded_at) if row.superseded_at else None,
                    superseded_reason=row.superseded_reason,
                )
            yield item


def flat_columns(all_history: bool) -> list[str]:
    base = [c for c in COLUMNS if c not in ("labels", "probabilities")]
    flat = base[:4] + [f"label_{k}" for k in LABEL_KEYS] + [f"prob_{k}" for k in LABEL_KEYS] + base[4:]
    return flat + list(HISTORY_COLUMNS) if all_history else flat


def flatten(row: Mapping[str, Any]) -> dict[str, Any]:
    flat = {key: value for key, value in row.items() if key not in ("labels", "probabilities")}
    flat.update({f"label_{key}": row["labels"][key] for key in LABEL_KEYS})
    flat.update({f"prob_{key}": row["probabilities"][key] for key in LABEL_KEYS})
    return flat


def write_jsonl(rows: Iterable[Mapping[str, Any]], stream: IO[str]) -> int:
    count = 0
    for row in rows:
        stream.write(json.dumps({k: _json_value(v) for k, v in row.items()}, ensure_ascii=False) + "\n")
        count += 1
    return count


def write_csv(rows: Iterable[Mapping[str, Any]], stream: IO[str], all_history: bool) -> int:
    writer = csv.DictWriter(stream, fieldnames=flat_columns(all_history), lineterminator="\n")
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerow({k: _csv_value(v) for k, v in flatten(row).items()})
        count += 1
    return count


def write_parquet(rows: Iterable[Mapping[str, Any]], stream: IO[bytes], all_history: bool) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ExportUnavailable(PARQUET_MISSING) from None
    timestamp = pa.timestamp("us", tz="UTC")
    fields = [
        pa.field("study_instance_uid", pa.string(), nullable=False),
        pa.field("accession_number", pa.string()),
        pa.field("model", pa.string(), nullable=False),
        pa.field("report_id", pa.int64(), nullable=False),
        *(pa.field(f"label_{k}", pa.int8(), nullable=False) for k in LABEL_KEYS),
        *(pa.field(f"prob_{k}", pa.float64(), nullable=False) for k in LABEL_KEYS),
        pa.field("labelled_at", timestamp, nullable=False),
    ]
    if all_history:
        fields += [pa.field("current", pa.bool_()), pa.field("superseded_at", timestamp),
                   pa.field("superseded_reason", pa.string())]
    schema = pa.schema(fields)
    count = 0
    with pq.ParquetWriter(stream, schema) as writer:
        for chunk in _chunks((flatten(row) for row in rows), ROWS_PER_CHUNK):
            writer.write_table(pa.Table.from_pylist(chunk, schema=schema))
            count += len(chunk)
        if count == 0:
            writer.write_table(schema.empty_table())
    return count


def export(database: Database, fmt: str, output: Path | None, *, all_history: bool = False) -> int:
    """Write the export to `output` (atomically) or standard output; returns the number of rows."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {', '.join(FORMATS)}")
    if fmt == "parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise ExportUnavailable(PARQUET_MISSING) from None
    rows = export_rows(database, all_history=all_history)
    binary = fmt == "parquet"
    with _target(output, binary) as stream:
        if fmt == "jsonl":
            return write_jsonl(rows, stream)
        if fmt == "csv":
            return write_csv(rows, stream, all_history)
        return write_parquet(rows, stream, all_history)


@contextmanager
def _target(output: Path | None, binary: bool) -> Iterator[Any]:
    if output is None:
        yield sys.stdout.buffer if binary else sys.stdout
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    text_options = {} if binary else {"encoding": "utf-8", "newline": ""}
    try:
        with open(descriptor, "wb" if binary else "w", **text_options) as stream:
            yield stream
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, output)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def _chunks(items: Iterable[dict[str, Any]], size: int) -> Iterator[list[dict[str, Any]]]:
    chunk: list[dict[str, Any]] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.timezone.utc) if moment.tzinfo is None else moment.astimezone(dt.timezone.utc)


def _json_value(value: Any) -> Any:
    return value.isoformat() if isinstance(value, dt.datetime) else value


def _csv_value(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return value.isoformat()
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else value
