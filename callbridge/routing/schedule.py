"""Working hours and holidays of a route, evaluated in the route's timezone.

Pure: :meth:`Schedule.is_open` takes the instant to judge, so tests (and the route
script, through its injected clock) decide what "now" is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["DAYS", "Schedule", "ScheduleError", "parse_schedule"]

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ScheduleError(ValueError):
    """A schedule value that cannot be read; the message names the key."""


Span = tuple[time, time]


@dataclass(frozen=True, slots=True)
class Schedule:
    """Open spans per weekday (0 = Monday) and closed dates, in ``timezone``.

    A span whose end is not after its start runs past midnight (``22:00-06:00``);
    ``00:00-00:00`` is the whole day. Holidays close the whole local date.
    """

    timezone: str = "UTC"
    hours: Mapping[int, tuple[Span, ...]] = field(default_factory=dict)
    holidays: frozenset[date] = frozenset()

    def is_open(self, instant: datetime) -> bool:
        if instant.tzinfo is None:
            raise ValueError("is_open needs an aware datetime")
        local = instant.astimezone(ZoneInfo(self.timezone))
        today, now = local.date(), local.time().replace(tzinfo=None)
        if today in self.holidays:
            return False
        for start, end in self.hours.get(local.weekday(), ()):
            if end > start and start <= now < end:
                return True
            if end <= start and now >= start:
                return True
        yesterday = today - timedelta(days=1)
        if yesterday in self.holidays:
            return False
        for start, end in self.hours.get(yesterday.weekday(), ()):
            # The tail after midnight of yesterday's overnight span.
            if end <= start and now < end:
                return True
        return False


def _time(text: str, key: str) -> time:
    try:
        hour, minute = text.strip().split(":")
        if hour == "24" and minute == "00":
            return time(0, 0)
        return time(int(hour), int(minute))
    except ValueError:
        raise ScheduleError(f"{key}: {text!r} is not HH:MM") from None


def parse_schedule(
    hours: Mapping[str, Iterable[str]],
    holidays: Iterable[str] = (),
    timezone: str = "UTC",
    key: str = "hours",
) -> Schedule:
    """``{"mon": ["09:00-13:00", "14:00-18:00"], …}`` plus ISO dates → :class:`Schedule`."""
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"timezone: unknown timezone {timezone!r}") from None
    parsed: dict[int, tuple[Span, ...]] = {}
    for day, spans in hours.items():
        name = day.strip().lower()[:3]
        if name not in DAYS:
            raise ScheduleError(f"{key}.{day}: not a weekday (use {', '.join(DAYS)})")
        if isinstance(spans, str):
            spans = [spans]
        out: list[Span] = []
        for span in spans:
            start, sep, end = str(span).partition("-")
            if not sep:
                raise ScheduleError(f"{key}.{day}: {span!r} is not HH:MM-HH:MM")
            out.append((_time(start, f"{key}.{day}"), _time(end, f"{key}.{day}")))
        parsed[DAYS.index(name)] = tuple(out)
    closed: set[date] = set()
    for text in holidays:
        try:
            closed.add(date.fromisoformat(str(text)))
        except ValueError:
            raise ScheduleError(f"holidays: {text!r} is not an ISO date (YYYY-MM-DD)") from None
    return Schedule(timezone=timezone, hours=parsed, holidays=frozenset(closed))
