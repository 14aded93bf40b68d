"""The steady client's summary (shoal.testkit.steadyclient.summarize): counts, failures, answers
before and after a moment, the rate."""
import pytest

from shoal.testkit.steadyclient import summarize

pytestmark = pytest.mark.unit


def test_summarize_counts_failures_and_answers_after_a_moment():
    recs = [[10.0, 0, True, "version v1", 40000], [10.5, 1, False, "TimeoutError: timed out", 40002],
            [11.0, 0, True, "version v2", 40004], [12.0, 1, True, "version v2", 40006]]
    s = summarize(recs, after=10.9)
    assert (s.requests, s.failed) == (4, 1)
    assert s.failures == [[10.5, 1, False, "TimeoutError: timed out", 40002]]
    assert dict(s.answers) == {"version v1": 1, "version v2": 2}
    assert dict(s.answers_after) == {"version v2": 2}
    assert s.rate == pytest.approx(4 / 2.0)


def test_summarize_nothing():
    s = summarize([])
    assert (s.requests, s.failed, s.rate, dict(s.answers)) == (0, 0, 0.0, {})
