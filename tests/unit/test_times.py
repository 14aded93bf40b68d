"""machinery.api.times: the one formatter and parser of wire times (agent, controllers, CLI, API server)."""
from datetime import datetime, timezone

import pytest

from shoal.machinery.api.times import format_micro_time, format_time, parse_datetime, parse_time

pytestmark = pytest.mark.unit
NOW = 1_800_000_000.0     # 2027-01-15T08:00:00Z


@pytest.mark.parametrize("epoch, want", [
    (NOW, "2027-01-15T08:00:00Z"),
    (NOW + 0.999, "2027-01-15T08:00:00Z"),        # truncated, as Go's Time.Format
    (0, "1970-01-01T00:00:00Z"),
    (None, None),                                  # an unset time stays unset
])
def test_format_time(epoch, want):
    assert format_time(epoch) == want


def test_format_micro_time():
    assert format_micro_time(NOW + 0.123456) == "2027-01-15T08:00:00.123456Z"
    assert format_micro_time(NOW) == "2027-01-15T08:00:00.000000Z"


@pytest.mark.parametrize("text, want", [
    ("2027-01-15T08:00:00Z", NOW),
    ("2027-01-15T08:00:00+00:00", NOW),            # the Python client's spelling
    ("2027-01-15T10:00:00+02:00", NOW),
    ("2027-01-15T08:00:00.250000Z", NOW + 0.25),
    ("2027-01-15T08:00:00", NOW),                  # no zone: UTC, never the machine's local time
    ("", None),
    (None, None),
    ("yesterday", None),                           # unreadable: the caller falls back
])
def test_parse_time(text, want):
    assert parse_time(text) == want


def test_parse_datetime_is_aware_and_round_trips():
    dt = parse_datetime("2027-01-15T08:00:00Z")
    assert dt == datetime(2027, 1, 15, 8, tzinfo=timezone.utc)
    assert parse_time(format_time(NOW)) == NOW
    assert parse_time(format_micro_time(NOW + 0.5)) == NOW + 0.5
