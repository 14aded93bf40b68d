"""Pure helpers of the pod worker (process resolution) and the log decoding."""
import pytest

from shoal.agent.interfaces import ContainerState
from shoal.agent.logserver import decode_line
from shoal.agent.worker import expand, observed_from_state, resolve_process

pytestmark = pytest.mark.unit
IMG = {"Entrypoint": ["/entry"], "Cmd": ["serve", "--port", "80"], "Env": ["PATH=/bin", "MODE=prod"],
       "WorkingDir": "/app", "User": "www"}


@pytest.mark.parametrize("command,args,argv", [
    (None, None, ["/entry", "serve", "--port", "80"]),            # image defaults
    (["/bin/sh", "-c"], None, ["/bin/sh", "-c"]),                # command drops Entrypoint and Cmd
    (None, ["debug"], ["/entry", "debug"]),                      # args replace Cmd only
    (["/bin/echo"], ["a", "b"], ["/bin/echo", "a", "b"]),
])
def test_command_and_args_over_entrypoint_and_cmd(command, args, argv):
    c = {"name": "c", "command": command, "args": args}
    assert resolve_process(c, IMG)[0] == argv


def test_env_override_order_and_expansion():
    c = {"name": "c", "env": [{"name": "MODE", "value": "dev"}, {"name": "GREETING", "value": "hi $(MODE)"},
                              {"name": "RAW", "value": "$$(MODE) $(NOPE)"}],
         "command": ["/bin/echo", "$(GREETING)"]}
    argv, env, wd, user = resolve_process(c, IMG)
    assert env == ["PATH=/bin", "MODE=dev", "GREETING=hi dev", "RAW=$(MODE) $(NOPE)"]
    assert argv == ["/bin/echo", "hi dev"]
    assert (wd, user) == ("/app", "www")


@pytest.mark.parametrize("csc,psc,user", [
    ({}, {}, "www"), ({"runAsUser": 1000}, {}, "1000"), ({}, {"runAsUser": 5, "runAsGroup": 6}, "5:6"),
    ({"runAsUser": 7}, {"runAsUser": 5}, "7"), ({"runAsGroup": 9}, {}, "www:9"),
])
def test_user_from_security_context(csc, psc, user):
    c = {"name": "c", "securityContext": csc}
    assert resolve_process(c, IMG, {"securityContext": psc})[3] == user


def test_working_dir_defaults():
    assert resolve_process({"name": "c", "workingDir": "/w"}, IMG)[2] == "/w"
    assert resolve_process({"name": "c"}, {"Cmd": ["x"]})[2] == "/"


def test_expand_keeps_unknown_and_escapes():
    assert expand("$(A)-$(B)-$$(A)-$", {"A": "1"}) == "1-$(B)-$(A)-$"


def test_observed_from_state_reads_labels_and_ignores_foreign_containers():
    s = ContainerState(id="x", status="running", labels={"shoal.io/container": "web", "shoal.io/attempt": "3",
                                                          "shoal.io/termination-grace-seconds": "9"}, pid=42)
    oc = observed_from_state(s)
    assert (oc.name, oc.attempt, oc.grace, oc.pid) == ("web", 3, 9, 42)
    assert observed_from_state(ContainerState(id="y", status="running", labels={})) is None


@pytest.mark.parametrize("raw,out", [
    (b"2026-11-22T10:55:38.075067787+00:00 stdout F hi\n", b"hi\n"),
    (b"2026-11-22T10:55:38.075067787+00:00 stderr P part", b"part"),
    (b"2026-11-22T10:55:38Z stdout F \n", b"\n"),
    (b"plain line\n", b"plain line\n"),
])
def test_decode_line(raw, out):
    assert decode_line(raw) == out
