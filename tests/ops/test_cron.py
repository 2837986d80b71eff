"""Crontab weekday numbers mean what they mean in crontab (APScheduler 3 counts from Monday)."""

from __future__ import annotations

import datetime as dt

import pytest

from daemon.ops.cron import crontab_trigger, crontab_weekdays

UTC = dt.timezone.utc


@pytest.mark.parametrize(
    ("field", "expected"),
    [
        ("*", "*"),
        ("1", "mon"),
        ("0", "sun"),
        ("7", "sun"),
        ("1-5", "mon,tue,wed,thu,fri"),
        ("0-6", "sun,mon,tue,wed,thu,fri,sat"),
        ("5-7", "fri,sat,sun"),
        ("*/2", "sun,tue,thu,sat"),
        ("1-5/2", "mon,wed,fri"),
        ("0,6", "sun,sat"),
        ("mon-fri", "mon-fri"),
        ("sat,1", "sat,mon"),
    ],
)
def test_weekday_numbers_become_names(field: str, expected: str) -> None:
    assert crontab_weekdays(field) == expected


@pytest.mark.parametrize("field", ["8", "5-2", "1-9", "*/0"])
def test_bad_weekdays(field: str) -> None:
    with pytest.raises(ValueError):
        crontab_weekdays(field)


def test_monday_is_monday() -> None:
    trigger = crontab_trigger("30 7 * * 1", timezone=UTC)
    fire = trigger.get_next_fire_time(None, dt.datetime(2026, 11, 26, tzinfo=UTC))  # a Thursday
    assert fire == dt.datetime(2026, 11, 30, 7, 30, tzinfo=UTC) and fire.strftime("%A") == "Monday"


def test_malformed_expressions() -> None:
    for expression in ("0 6 * *", "61 * * * *", "0 25 * * *", "0 6 * * 8"):
        with pytest.raises(ValueError):
            crontab_trigger(expression)
