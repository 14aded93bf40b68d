"""A pod's resolv.conf per dnsPolicy and dnsConfig (agent.runtime.spec.pod_resolv_conf, the
kubelet's rules), the PodDNS the worker builds from a pod (agent.worker.pod_dns), and the
MissingClusterDNS warning."""
from __future__ import annotations

import pytest

from shoal.agent.interfaces import PodDNS
from shoal.agent.runtime.spec import (ResolvConf, format_resolv_conf, parse_resolv_conf, pod_resolv_conf,
                                      render_resolv_conf)
from shoal.agent.worker import pod_dns

pytestmark = pytest.mark.unit

HOST = "# generated\nnameserver 10.0.0.2\nnameserver 127.0.0.53\nsearch lan corp.example.\noptions edns0 ndots:2\n"
NODE_DNS = ("10.244.1.1",)


def dns(policy="ClusterFirst", ns="default", cluster=NODE_DNS, **kw) -> PodDNS:
    return PodDNS(policy=policy, namespace=ns, cluster_domain="cluster.local", cluster_nameservers=cluster, **kw)


CLUSTER = ("nameserver 10.244.1.1\n"
           "search default.svc.cluster.local svc.cluster.local cluster.local lan corp.example\n"
           "options ndots:5\n")
HOSTS_OWN = "nameserver 10.0.0.2\nsearch lan corp.example\noptions edns0 ndots:2\n"


@pytest.mark.parametrize("pod, expected", [
    (dns(), CLUSTER),
    (dns("ClusterFirstWithHostNet"), CLUSTER),
    (dns(ns="team-a"), CLUSTER.replace("default.svc", "team-a.svc")),
    # no cluster DNS on the node: the kubelet falls back to Default
    (dns(cluster=()), HOSTS_OWN),
    (dns("Default"), HOSTS_OWN),
    (dns("None", nameservers=("1.1.1.1",), searches=("a.example",), options=(("ndots", "2"), ("edns0", None))),
     "nameserver 1.1.1.1\nsearch a.example\noptions ndots:2 edns0\n"),
    # dnsConfig on top: appended without duplicates, options merged by name (the pod's win)
    (dns(nameservers=("1.1.1.1", "10.244.1.1"), searches=("lan", "b.example"),
         options=(("ndots", "2"), ("edns0", ""), ("timeout", "1"))),
     "nameserver 10.244.1.1\nnameserver 1.1.1.1\n"
     "search default.svc.cluster.local svc.cluster.local cluster.local lan corp.example b.example\n"
     "options ndots:2 edns0 timeout:1\n"),
    (dns("Default", nameservers=("10.0.0.2", "127.0.0.1")),
     "nameserver 10.0.0.2\nnameserver 127.0.0.1\nsearch lan corp.example\noptions edns0 ndots:2\n"),
])
def test_resolv_conf_per_policy(pod, expected):
    assert render_resolv_conf(HOST, pod) == expected


def test_none_without_dns_config_is_empty():
    assert render_resolv_conf(HOST, dns("None")) == ""


def test_without_pod_dns_the_host_file_as_docker_does():
    assert render_resolv_conf(HOST) == "# generated\nnameserver 10.0.0.2\nsearch lan corp.example.\noptions edns0 ndots:2\n"


@pytest.mark.parametrize("text, expected", [
    ("nameserver 1.1.1.1\nnameserver 8.8.8.8\n", ResolvConf(("1.1.1.1", "8.8.8.8"))),
    ("search a b\nsearch c .\n", ResolvConf(searches=("c",))),
    ("search a b\ndomain corp\n", ResolvConf(searches=("corp",))),
    ("domain corp\nsearch a. b\n", ResolvConf(searches=("a", "b"))),
    ("options ndots:2 edns0\noptions ndots:3\n", ResolvConf(options=("ndots:3", "edns0"))),
    ("; comment\n# nameserver 9.9.9.9\nsortlist 10.0.0.0\nnameserver\n", ResolvConf()),
])
def test_parse_host_resolv_conf(text, expected):
    assert parse_resolv_conf(text) == expected


def test_limits_as_the_kubelet_trims_them():
    conf, warnings = pod_resolv_conf(ResolvConf(), dns(nameservers=("1.1.1.1", "8.8.8.8", "9.9.9.9")))
    assert conf.nameservers == ("10.244.1.1", "1.1.1.1", "8.8.8.8")
    assert warnings == ["Nameserver limits were exceeded, some nameservers have been omitted, the applied "
                        "nameserver line is: 10.244.1.1 1.1.1.1 8.8.8.8"]

    many = tuple(f"d{i}.example" for i in range(40))
    conf, warnings = pod_resolv_conf(ResolvConf(), dns(searches=many))
    assert len(conf.searches) == 32 and conf.searches[:3] == ("default.svc.cluster.local", "svc.cluster.local",
                                                              "cluster.local")
    assert len(warnings) == 1 and warnings[0].startswith("Search Line limits were exceeded")

    too_long = "a" * 250 + ".example"
    conf, warnings = pod_resolv_conf(ResolvConf(), dns("None", nameservers=("1.1.1.1",), searches=(too_long, "ok")))
    assert conf.searches == ("ok",) and warnings

    wide = tuple(f"{i:02d}" + "x" * 120 + ".example" for i in range(20))      # 20 × 131 characters
    conf, warnings = pod_resolv_conf(ResolvConf(), dns("None", nameservers=("1.1.1.1",), searches=wide))
    assert len(" ".join(conf.searches)) <= 2048 and conf.searches == wide[:len(conf.searches)]
    assert len(conf.searches) == 15 and warnings

    assert pod_resolv_conf(parse_resolv_conf(HOST), dns())[1] == []


def test_format_resolv_conf():
    assert format_resolv_conf(ResolvConf()) == ""
    assert format_resolv_conf(ResolvConf(("1.1.1.1",), (), ("ndots:5",))) == "nameserver 1.1.1.1\noptions ndots:5\n"


@pytest.mark.parametrize("spec, ns, expected", [
    ({}, None, PodDNS(policy="ClusterFirst", namespace="default", cluster_nameservers=NODE_DNS)),
    ({"dnsPolicy": "Default"}, "team-a", PodDNS(policy="Default", namespace="team-a", cluster_nameservers=NODE_DNS)),
    ({"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"], "searches": ["x.example"],
                                         "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}},
     "default",
     PodDNS(policy="None", namespace="default", cluster_nameservers=NODE_DNS, nameservers=("1.1.1.1",),
            searches=("x.example",), options=(("ndots", "2"), ("edns0", None)))),
])
def test_pod_dns_from_the_pod(spec, ns, expected):
    md = {"name": "p"} if ns is None else {"name": "p", "namespace": ns}
    assert pod_dns({"metadata": md, "spec": spec}, cluster_nameservers=NODE_DNS,
                   cluster_domain="cluster.local") == expected


# ------------------------------------------------------------------------------ the worker
class _Events:
    def __init__(self):
        self.seen = []

    def event(self, obj, type_, reason, message):
        self.seen.append((type_, reason, message))


class _Probes:
    def sync_pod(self, pod, running, ip):
        pass

    def pod_results(self, uid):
        return {}

    def remove_pod(self, uid):
        pass


class _Api:
    def write_status(self, pod, status):
        return {**pod, "status": status}

    def confirm_deletion(self, pod):
        pass


def _run_pod(tmp_path, spec_extra, cluster_dns):
    from shoal.agent.fakes import FakeImageStore, FakeNetwork, FakeRuntime
    from shoal.agent.restarts import RestartTracker
    from shoal.agent.worker import PodWorker, WorkerContext
    from shoal.machinery.control.clock import FakeClock
    clock = FakeClock()
    network = FakeNetwork()
    network.ensure_node("10.244.1.0/24")
    runtime = FakeRuntime(clock)
    events = _Events()
    ctx = WorkerContext(node_name="n1", host_ip="192.168.5.2", data_dir=tmp_path, images=FakeImageStore(),
                        runtime=runtime, network=network, probes=_Probes(), tracker=RestartTracker(), api=_Api(),
                        events=events, clock=clock, sleep=lambda s: None, cluster_dns=cluster_dns,
                        cluster_domain="shoal.test")
    w = PodWorker("u1-0123456789ab", ctx)
    w.set_pod({"metadata": {"name": "web-1", "namespace": "team-a", "uid": "u1-0123456789ab"},
               "spec": {"nodeName": "n1", "containers": [{"name": "a", "image": "reg/web:v1"},
                                                         {"name": "b", "image": "reg/web:v1"}], **spec_extra}})
    w.sync()
    cfgs = [p.cfg for p in runtime._procs.values()]
    assert len(cfgs) == 2
    return cfgs, events.seen


def test_worker_hands_the_runtime_the_pods_dns(tmp_path):
    cfgs, seen = _run_pod(tmp_path, {"dnsConfig": {"searches": ["x.example"]}}, lambda: ("10.244.1.1",))
    assert {c.dns for c in cfgs} == {PodDNS(policy="ClusterFirst", namespace="team-a", cluster_domain="shoal.test",
                                            cluster_nameservers=("10.244.1.1",), searches=("x.example",))}
    assert not [s for s in seen if s[1] == "MissingClusterDNS"]


def test_a_node_without_cluster_dns_warns_once_per_pod(tmp_path):
    cfgs, seen = _run_pod(tmp_path, {}, lambda: ())
    assert all(c.dns.cluster_nameservers == () for c in cfgs)
    warned = [s for s in seen if s[1] == "MissingClusterDNS"]
    assert len(warned) == 1 and warned[0][0] == "Warning"
    assert 'node n1 has no cluster DNS configured and cannot create Pod using "ClusterFirst" policy' in warned[0][2]


def test_a_default_policy_pod_is_not_warned(tmp_path):
    _, seen = _run_pod(tmp_path, {"dnsPolicy": "Default"}, lambda: ())
    assert not [s for s in seen if s[1] == "MissingClusterDNS"]
