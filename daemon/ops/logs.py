"""Logging set-up: hierarchical `neurolabel.*` loggers, text or JSON lines.

Callers log ids (accession, study UID, MSH-10, job id) and timings, never
report text or patient identifiers.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys

_STANDARD_ATTRS = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.timezone.utc).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


class DatabaseErrorFilter(logging.Filter):
    """Logs a database error as its type and where it happened, without its text or traceback.

    Its text can carry what the failed statement was about: SQLAlchemy adds the statement's parameters
    (hidden by open_database, but not by every engine), and PostgreSQL's DETAIL quotes key values (a
    duplicate patient id). Components log failed commits with log.exception; this makes that safe.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and record.exc_info[1] is not None and _is_database_error(record.exc_info[1]):
            error = record.exc_info[1]
            record.msg = f"{record.getMessage()} [{_describe(error)}]"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return True


def _is_database_error(error: BaseException) -> bool:
    seen: BaseException | None = error
    while seen is not None:
        if type(seen).__module__.split(".")[0] in _DATABASE_MODULES:
            return True
        seen = seen.__cause__ or seen.__context__
    return False


_DATABASE_MODULES = frozenset({"sqlalchemy", "sqlite3", "psycopg", "psycopg2", "alembic"})


def _describe(error: BaseException) -> str:
    traceback = error.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    where = ""
    if traceback is not None:
        where = f" at {traceback.tb_frame.f_code.co_filename.rsplit('/', 1)[-1]}:{traceback.tb_lineno}"
    original = getattr(error, "orig", None)
    inner = f" ({type(original).__name__})" if original is not None else ""
    return f"{type(error).__name__}{inner}{where}; details withheld from the log"


def configure_logging(level: str = "INFO", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(DatabaseErrorFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING)
    logging.getLogger("neurolabel").setLevel(level)
    # pynetdicom logs dataset contents at DEBUG (patient names among them).
    logging.getLogger("pynetdicom").setLevel(logging.WARNING)
