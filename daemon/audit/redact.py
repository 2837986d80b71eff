"""Error texts fit for the audit trail: database errors carry their SQL parameters (report text, patient
names), so of those only the exception types are kept."""

from __future__ import annotations

MAX_DETAIL = 500


def error_summary(error: BaseException) -> str:
    """`Type: message` for ordinary errors; `Type (DriverType)` for database errors, without their statement."""
    original = getattr(error, "orig", None)
    if original is not None or hasattr(error, "statement"):
        return f"{type(error).__name__} ({type(original).__name__})" if original is not None else type(error).__name__
    text = str(error)
    return f"{type(error).__name__}: {text}"[:MAX_DETAIL] if text else type(error).__name__
