"""shoal.machinery.api.quantity: parsing, rounding and formatting of Kubernetes quantities."""
from decimal import Decimal

import pytest

from shoal.machinery.api.quantity import cpu_millis, format_bytes, format_cpu_millis, memory_bytes, parse_quantity

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("text,value", [
    ("100m", Decimal("0.1")),
    ("0.5", Decimal("0.5")),
    (".5", Decimal("0.5")),
    ("5.", Decimal(5)),
    ("128Mi", Decimal(128 * 2**20)),
    ("1Gi", Decimal(2**30)),
    ("1.5Gi", Decimal(3 * 2**29)),
    ("1Ki", Decimal(1024)),
    ("1G", Decimal(10**9)),
    ("1k", Decimal(1000)),
    ("1M", Decimal(10**6)),
    ("1E", Decimal(10**18)),
    ("1e3", Decimal(1000)),
    ("1E3", Decimal(1000)),
    ("1e-3", Decimal("0.001")),
    ("250u", Decimal("0.00025")),
    ("5n", Decimal("0.000000005")),
    ("+2", Decimal(2)),
    ("-1", Decimal(-1)),
    (2, Decimal(2)),
    (0.25, Decimal("0.25")),
])
def test_parse(text, value):
    assert parse_quantity(text) == value


@pytest.mark.parametrize("bad,fragment", [
    ("", "quantities must match"),
    (" 1", "quantities must match"),
    ("1 ", "quantities must match"),
    ("abc", "quantities must match"),
    (".", "quantities must match"),
    ("m", "quantities must match"),
    ("1Zi", "quantities must match"),
    ("1 core", "quantities must match"),
    ("1Ti3", "unknown suffix 'Ti3'"),
    ("1e", "unknown suffix 'e'"),
    ("1..2", "unknown suffix"),
    ("1mi", "unknown suffix 'mi'"),
    ("1e999", "out of range"),
    (True, "quantities must match"),
    (None, "quantities must match"),
    (float("nan"), "quantities must match"),
])
def test_parse_rejects(bad, fragment):
    with pytest.raises(ValueError) as e:
        parse_quantity(bad)
    assert fragment in str(e.value)
    assert repr(bad) in str(e.value)  # the message names the bad input


@pytest.mark.parametrize("q,millis", [("100m", 100), ("0.5", 500), ("1", 1000), (2, 2000), ("0.0001", 1),
                                      ("1500m", 1500), ("1e-4", 1), ("0", 0)])
def test_cpu_millis_rounds_up(q, millis):
    assert cpu_millis(q) == millis


@pytest.mark.parametrize("q,nbytes", [("128Mi", 134217728), ("1G", 10**9), ("1e3", 1000), ("0.5", 1),
                                      (1024, 1024), ("1.5Ki", 1536)])
def test_memory_bytes(q, nbytes):
    assert memory_bytes(q) == nbytes


@pytest.mark.parametrize("millis,text", [(250, "250m"), (1000, "1"), (2000, "2"), (1500, "1500m"), (0, "0")])
def test_format_cpu(millis, text):
    assert format_cpu_millis(millis) == text
    assert cpu_millis(text) == millis  # round trip


@pytest.mark.parametrize("n,text", [(134217728, "128Mi"), (2**30, "1Gi"), (3 * 2**29, "1536Mi"), (1024, "1Ki"),
                                    (1500000000, "1500M"), (1023, "1023"), (0, "0"), (2**40, "1Ti")])
def test_format_bytes(n, text):
    assert format_bytes(n) == text
    assert memory_bytes(text) == n  # round trip
