"""`--no-service-proxy` on shoal agent and shoal up, and the table `shoal down` removes."""
from __future__ import annotations

from pathlib import Path

import pytest

import shoal.agent.network.runner as runner_mod
from shoal.agent.network.runner import CommandError, RecordingRunner
from shoal.cli.cmd_agent import service_proxy_runner
from shoal.cli.main import build_parser

pytestmark = pytest.mark.unit


class Recorder(RecordingRunner):
    table_present = True

    def __init__(self, **_):
        super().__init__(respond=self.answer)
        made.append(self)

    def answer(self, argv, stdin):
        if argv[:4] == ["nft", "-t", "-j", "list"] and not self.table_present:
            raise CommandError(argv, 1, "Error: No such file or directory")
        return "{}"


made: list[Recorder] = []


@pytest.fixture(autouse=True)
def fake_nft(monkeypatch):
    made.clear()
    monkeypatch.setattr(runner_mod, "SubprocessRunner", Recorder)


def agent_args(*flags):
    return build_parser().parse_args(["agent", "--server", "https://10.0.0.1:6443", *flags])


def test_the_agent_runs_a_proxy_by_default_and_a_hollow_node_none():
    r = service_proxy_runner(agent_args(), "shoal0")
    assert isinstance(r, Recorder) and r.calls == []          # nothing run before the agent starts
    assert service_proxy_runner(agent_args("--fake-runtime"), "shoal0") is None
    assert made == [r]


def test_no_service_proxy_removes_the_table_an_earlier_run_left():
    args = agent_args("--no-service-proxy", "--bridge", "lab0")
    assert args.no_service_proxy is True
    assert service_proxy_runner(args, args.bridge) is None
    (r,) = made
    assert r.calls == [(["nft", "-t", "-j", "list", "table", "ip", "shoal-svc-lab0"], None),
                       (["nft", "-f", "-"], "add table ip shoal-svc-lab0\ndelete table ip shoal-svc-lab0\n")]


def test_no_service_proxy_without_a_table_changes_nothing():
    Recorder.table_present = False
    try:
        assert service_proxy_runner(agent_args("--no-service-proxy"), "shoal0") is None
        assert [argv for argv, _ in made[0].calls] == [["nft", "-t", "-j", "list", "table", "ip", "shoal-svc"]]
    finally:
        Recorder.table_present = True


def test_detached_up_passes_no_service_proxy_to_its_child(tmp_path, monkeypatch):
    import shoal.cli.cmd_up as up
    seen = {}

    class Proc:
        pid = 424242
        returncode = 1

        def poll(self):
            return 1

    monkeypatch.setattr(up.subprocess, "Popen", lambda argv, **kw: seen.setdefault("argv", argv) and Proc())
    monkeypatch.setattr(up.sys, "argv", ["pytest"])
    args = build_parser().parse_args(["up", "--detach", "--data-dir", str(tmp_path), "--no-service-proxy",
                                      "--skip-checks"])
    assert up._detach(args, Path(tmp_path)) == 1
    assert build_parser().parse_args(seen["argv"][3:]).no_service_proxy is True


def test_shoal_down_removes_the_service_table_with_the_hostport_table(monkeypatch):
    import shoal.cli.cmd_up as up
    ran = []
    monkeypatch.setattr(up.subprocess, "run", lambda argv, **kw: ran.append(argv))
    up.remove_host_network(up.HostNetwork(bridge="lab0"))
    assert ["nft", "delete", "table", "ip", "shoal-svc-lab0"] in ran
    assert ["nft", "delete", "table", "ip", "shoal_lab0"] in ran
