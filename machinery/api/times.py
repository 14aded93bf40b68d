"""Times on the wire, as Kubernetes writes them: the one place that formats and parses them.

Contract:
- On the wire a time is an RFC 3339 string in UTC: `metav1.Time` at whole seconds
  (`2024-05-01T10:00:00Z`: creationTimestamp, condition transitions, container
  start/finish, Event first/lastTimestamp), `metav1.MicroTime` with microseconds
  (`2024-05-01T10:00:00.123456Z`: Lease acquire/renew times, Event.eventTime).
- In code a time is float epoch seconds, from the injected clock (`Clock.now()`).
- `format_time(None)` is None (an unset time; the API server drops the field).
  Whole seconds are truncated, not rounded, as Go's `Time.Format` does.
- `parse_time`/`parse_datetime` read what any client sends — `Z` or an offset,
  with or without a fraction; a time without a zone is taken as UTC — and answer
  None for an empty or unreadable value: readers of stored objects fall back (to
  "now", to "not yet") instead of failing. The API server's decoder is the strict
  reader (models/base.py): it rejects what these forgive, with the field's path.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import overload

TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
MICRO_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


@overload
def format_time(epoch: float) -> str: ...


@overload
def format_time(epoch: None) -> None: ...


def format_time(epoch: float | None) -> str | None:
    """Epoch seconds -> `2024-05-01T10:00:00Z` (metav1.Time: whole seconds); None -> None."""
    if epoch is None:
        return None
    return datetime.fromtimestamp(int(epoch), tz=timezone.utc).strftime(TIME_FORMAT)


def format_micro_time(epoch: float) -> str:
    """Epoch seconds -> `2024-05-01T10:00:00.123456Z` (metav1.MicroTime)."""
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime(MICRO_TIME_FORMAT)


def parse_datetime(value: str | None) -> datetime | None:
    """RFC 3339 -> an aware datetime; None when empty or unreadable."""
    if not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return dt


def parse_time(value: str | None) -> float | None:
    """RFC 3339 -> epoch seconds; None when empty or unreadable."""
    dt = parse_datetime(value)
    return None if dt is None else dt.timestamp()
