"""Crontab expressions as APScheduler triggers, with crontab's weekday numbers.

APScheduler 3's `CronTrigger.from_crontab` reads the weekday field with 0 = Monday (its own numbering, see
its issue 286), so "0 6 * * 1" would run on Tuesdays. Here numeric weekdays mean what they mean in crontab
(0 and 7 = Sunday, 1 = Monday ... 6 = Saturday) and are turned into day names, which APScheduler reads
unambiguously; names (mon-fri) are passed through.
"""

from __future__ import annotations

import datetime as dt
import re

from apscheduler.triggers.cron import CronTrigger

DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")
_NUMERIC = re.compile(r"^(\*|\d+(?:-\d+)?)(?:/(\d+))?$")


def crontab_weekdays(field: str) -> str:
    """A crontab weekday field with its numbers replaced by day names (pure); ValueError when malformed."""
    if field in ("*", "?"):
        return "*"
    parts: list[str] = []
    for token in field.split(","):
        match = _NUMERIC.match(token)
        if match is None:
            parts.append(token)  # names, e.g. "mon-fri": APScheduler reads them as crontab does
            continue
        span, step = match.group(1), int(match.group(2) or 1)
        if span == "*":
            first, last = 0, 6
        else:
            first_text, _, last_text = span.partition("-")
            first, last = int(first_text), int(last_text or first_text)
        if not (0 <= first <= 7 and 0 <= last <= 7 and first <= last and step >= 1):
            raise ValueError(f"weekday {token!r} is not 0-7 (0 and 7 are Sunday)")
        parts.extend(DAY_NAMES[day % 7] for day in range(first, last + 1, step))
    return ",".join(dict.fromkeys(parts))


def crontab_trigger(expression: str, timezone: dt.tzinfo | str | None = None) -> CronTrigger:
    """The trigger of a 5-field crontab expression (minute hour day month weekday); ValueError when malformed."""
    fields = expression.split()
    if len(fields) != 5:
        raise ValueError(f"wrong number of fields; got {len(fields)}, expected 5")
    minute, hour, day, month, weekday = fields
    return CronTrigger(
        minute=minute, hour=hour, day=day, month=month, day_of_week=crontab_weekdays(weekday), timezone=timezone
    )
