"""k8s-file parsing, rotation bookkeeping and read_log (tail, follow across a rotation)."""
from __future__ import annotations

import os

import pytest

from shoal.agent.runtime.logs import join_records, parse_record, read_log, track_rotation, forget_rotation

pytestmark = pytest.mark.unit

TS = "2026-11-22T10:55:38.075067787+00:00"


def rec(text: str, stream: str = "stdout", tag: str = "F") -> bytes:
    return f"{TS} {stream} {tag} {text}\n".encode()


@pytest.mark.parametrize("raw, expected", [
    (rec("hi"), (b"hi", True)),
    (rec("err", "stderr"), (b"err", True)),
    (rec("part", tag="P"), (b"part", False)),
    (f"{TS} stdout F \n".encode(), (b"", True)),          # an empty line
    (rec("a b  c"), (b"a b  c", True)),
    (b"not a record\n", (b"not a record", True)),
])
def test_parse_record(raw, expected):
    assert parse_record(raw) == expected


def test_join_partials():
    raws = [rec("one"), rec("lo", tag="P"), rec("ng", tag="P"), rec("line"), rec("tail", tag="P")]
    assert list(join_records(raws)) == [b"one\n", b"longline\n", b"tail"]


def write(path, *records: bytes, mode="ab"):
    with open(path, mode) as f:
        f.write(b"".join(records))


def test_read_log_plain_and_tail(tmp_path):
    p = tmp_path / "0.log"
    write(p, rec("a"), rec("b", "stderr"), rec("c"))
    assert list(read_log(str(p))) == [b"a\n", b"b\n", b"c\n"]
    assert list(read_log(str(p), tail_lines=2)) == [b"b\n", b"c\n"]
    assert list(read_log(str(p), tail_lines=0)) == []
    with pytest.raises(FileNotFoundError):
        list(read_log(str(tmp_path / "missing.log")))


def simulate_conmon_rotation(p):
    """What conmon does at --log-size-max: a fresh file renamed over the log."""
    tmp = str(p) + ".tmp"
    open(tmp, "wb").close()
    os.replace(tmp, p)


def test_rotation_keeps_previous_generation(tmp_path):
    p = tmp_path / "0.log"
    write(p, rec("gen1-a"), rec("gen1-b"))
    assert track_rotation(str(p)) is False          # first call: starts tracking
    assert track_rotation(str(p)) is False          # nothing happened
    simulate_conmon_rotation(p)
    write(p, rec("gen2-a"))
    assert track_rotation(str(p)) is True
    assert (tmp_path / "0.log.1").read_bytes() == rec("gen1-a") + rec("gen1-b")
    assert list(read_log(str(p))) == [b"gen1-a\n", b"gen1-b\n", b"gen2-a\n"]
    assert list(read_log(str(p), tail_lines=2)) == [b"gen1-b\n", b"gen2-a\n"]
    simulate_conmon_rotation(p)
    write(p, rec("gen3"))
    assert track_rotation(str(p)) is True
    assert list(read_log(str(p))) == [b"gen2-a\n", b"gen3\n"]       # one previous generation only
    forget_rotation(str(p))
    assert not (tmp_path / "0.log.cur").exists()
    assert p.exists() and (tmp_path / "0.log.1").exists()           # the logs themselves stay


def test_follow_across_rotation_until_stopped(tmp_path):
    p = tmp_path / "0.log"
    write(p, rec("first"))
    steps = iter([
        lambda: write(p, rec("sec", tag="P"), rec("ond")),
        lambda: (simulate_conmon_rotation(p), write(p, rec("after-rotation"))),
        lambda: None,
    ])
    running = {"v": True}

    def sleep(_):
        step = next(steps, None)
        if step is None:
            running["v"] = False
        else:
            step()

    got = list(read_log(str(p), follow=True, still_writing=lambda: running["v"], sleep=sleep))
    assert got == [b"first\n", b"second\n", b"after-rotation\n"]


def test_follow_returns_when_not_writing(tmp_path):
    p = tmp_path / "0.log"
    write(p, rec("x"), rec("half", tag="P"))
    assert list(read_log(str(p), follow=True, still_writing=lambda: False, sleep=lambda _: None)) == \
        [b"x\n", b"half"]
