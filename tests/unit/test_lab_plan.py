"""`shoal lab` planning: names, addresses, paths and command lines (pure)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from shoal.testkit import lab as L

pytestmark = pytest.mark.unit


def plan(n=3, **kw):
    return L.plan_lab("demo", n, root=L.Path("/x/lab"), run_root=L.Path("/run/x"), **kw)


def test_plan_names_addresses_and_paths():
    p = plan()
    assert (p.lab_netns, p.cp_netns, p.cp_ip, p.subnet) == ("demo-lab", "demo-cp", "10.213.0.2", "10.213.0.0/24")
    assert [(h.name, h.netns, h.ip) for h in p.hosts] == [
        ("h1", "demo-h1", "10.213.0.11"), ("h2", "demo-h2", "10.213.0.12"), ("h3", "demo-h3", "10.213.0.13")]
    h = p.hosts[1]
    assert (h.data_dir, h.runc_root, h.cgroup_parent, h.agent_cgroup) == (
        "/x/lab/demo/h2", "/run/x/demo/h2/runc", "shoal-lab-demo-h2", "shoal-lab-demo-h2/shoal-agent")
    assert (p.kubeconfig, p.state_file, p.server_url) == (
        "/x/lab/demo/kubeconfig", "/x/lab/demo/state.json", "https://10.213.0.2:6443")
    assert p.host("demo-h3") is p.hosts[2] and p.host("h1") is p.hosts[0]
    with pytest.raises(L.LabError, match="no host 'h9'"):
        p.host("h9")


@pytest.mark.parametrize("name,n,subnet,err", [
    ("Lab", 3, "10.213.0.0/24", "lower-case"),
    ("lab", 0, "10.213.0.0/24", "do not fit"),
    ("lab", 3, "8.8.8.0/24", "not a private range"),
    ("lab-1", 3, "10.213.0.0/24", "lower-case"),
])
def test_plan_rejects(name, n, subnet, err):
    with pytest.raises(L.LabError, match=err):
        L.plan_lab(name, n, subnet=subnet)


def test_other_subnet():
    p = plan(2, subnet="192.168.77.0/24")
    assert p.cp_ip == "192.168.77.2" and [h.ip for h in p.hosts] == ["192.168.77.11", "192.168.77.12"]


def test_agent_and_server_argv():
    p = plan()
    a = L.agent_argv(p, p.hosts[0], join_token="K10abc::server:s", registry_mirror="127.0.0.1:5555=http://10.213.0.2:5000",
                     extra=["--backoff-initial", "1"])
    assert a[:3] == [sys.executable, "-m", "shoal.cli"] and a[3] == "agent"
    flags = dict(zip(a[4::2], a[5::2]))
    assert flags == {"--server": "https://10.213.0.2:6443", "--token": "K10abc::server:s", "--node-name": "h1",
                     "--address": "10.213.0.11", "--data-dir": "/x/lab/demo/h1", "--runc-root": "/run/x/demo/h1/runc",
                     "--cgroup-parent": "shoal-lab-demo-h1",
                     "--registry-mirror": "127.0.0.1:5555=http://10.213.0.2:5000",
                     "--pod-netns-prefix": "demo-h1-", "--backoff-initial": "1"}
    s = L.server_argv(p, node_grace_period=4, eviction_delay=2)
    assert s[3:] == ["server", "--listen", "0.0.0.0:6443", "--tls-san", "10.213.0.2", "--data-dir",
                     "/x/lab/demo/server", "--write-kubeconfig", "/x/lab/demo/server/admin.kubeconfig",
                     "--node-grace-period", "4", "--eviction-delay", "2"]
    f = L.forwarder_argv(p, api_port=0, registry_port=7000, ports_file="/p.json")
    assert "127.0.0.1:0=10.213.0.2:6443" in f and "127.0.0.1:7000=10.213.0.2:5000" in f and "/run/netns/demo-cp" in f


def test_agent_flags_exist_in_shoal_agent():
    # the lab's argv must parse with the real `shoal agent` parser
    from shoal.cli.main import build_parser
    p = plan()
    a = L.agent_argv(p, p.hosts[0], join_token="t", registry_mirror="a=http://b")
    args = build_parser().parse_args(a[3:])
    assert args.pod_netns_prefix == "demo-h1-" and args.cgroup_parent == "shoal-lab-demo-h1"
    srv = build_parser().parse_args(L.server_argv(p)[3:])
    assert srv.insecure_http is False and srv.tls_san == ["10.213.0.2"]     # HTTPS, the default


def test_registry_config_listens_in_the_lab_with_storage_in_the_lab_dir():
    c = L.registry_config(plan())
    assert "addr: 0.0.0.0:5000" in c and "rootdirectory: /x/lab/demo/registry/storage" in c


def test_mounts_under_deepest_first():
    info = "\n".join([
        "1 0 0:1 / / rw - ext4 /dev/root rw",
        "2 1 0:2 / /x/lab/demo/h1/runtime/containers/a/bundle/rootfs rw - overlay overlay rw",
        "3 1 0:3 / /x/lab/demo/h1/runtime/containers/a/bundle/rootfs/etc/hosts rw - ext4 x rw",
        "4 1 0:4 / /x/lab/demo2/h1 rw - ext4 x rw",
        "5 1 0:5 / /run/x/demo rw - tmpfs t rw",
    ])
    assert L.mounts_under(["/x/lab/demo", "/run/x/demo/"], info) == [
        "/x/lab/demo/h1/runtime/containers/a/bundle/rootfs/etc/hosts",
        "/x/lab/demo/h1/runtime/containers/a/bundle/rootfs", "/run/x/demo"]


def test_state_round_trip():
    rec = L.ProcRecord(pid=1, start=2, argv=["a"], log="/l", cgroup="g")
    st = L.LabState(name="demo", subnet="10.213.0.0/24", n_hosts=2, api_port=1, registry_port=2, server=rec,
                    agents={"h1": rec}, agent_extra=["-v"])
    assert L.LabState.from_json(st.to_json()) == st


def test_process_identity_survives_only_while_the_same_process_lives():
    p = subprocess.Popen(["sleep", "30"])
    try:
        rec = L.ProcRecord(pid=p.pid, start=L.proc_start_time(p.pid), argv=["sleep"], log="", cgroup="")
        assert L.is_running(rec)
        assert not L.is_running(L.ProcRecord(pid=p.pid, start=rec.start + 1, argv=[], log="", cgroup=""))
        assert not L.kill_record(L.ProcRecord(pid=p.pid, start=rec.start + 1, argv=[], log="", cgroup=""))
        assert p.poll() is None            # a recycled PID is never signalled
        assert L.kill_record(rec)
        p.wait(timeout=10)
        assert not L.is_running(rec) and not L.is_running(None)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
