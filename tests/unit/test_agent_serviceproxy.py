"""ServiceProxy: the level-based executor of the service rules, on a recording nft runner."""
from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from shoal.agent.network.runner import CommandError, RecordingRunner
from shoal.agent.serviceproxy import ServiceProxy, node_pod_cidrs, remove_table

pytestmark = pytest.mark.unit

ABSENT = CommandError(["nft"], 1, "Error: No such file or directory\nlist table ip shoal-svc\n")


class FakeSource:
    """An informer's cache: list(), has_synced(), handlers — driven by the test."""

    def __init__(self, items=(), synced=True):
        self.items = {self._k(o): o for o in items}
        self.synced = synced
        self.handlers = []

    @staticmethod
    def _k(o):
        return f"{o['metadata'].get('namespace', '')}/{o['metadata']['name']}"

    def list(self):
        return list(self.items.values())

    def has_synced(self):
        return self.synced

    def add_handler(self, *, on_add=None, on_update=None, on_delete=None, on_list=None):
        self.handlers.append((on_add, on_update, on_delete, on_list))

    def put(self, obj):
        old = self.items.get(self._k(obj))
        self.items[self._k(obj)] = obj
        for add, upd, _, _ in self.handlers:
            (upd(old, obj) if old is not None else add(obj))

    def delete(self, obj):
        self.items.pop(self._k(obj))
        for _, _, dele, _ in self.handlers:
            dele(obj)


def service(name="web", ip="10.43.0.10", rv="10", **spec):
    return {"metadata": {"namespace": "default", "name": name, "resourceVersion": rv,
                         "creationTimestamp": "2024-01-01T00:00:00Z"},
            "spec": {"clusterIP": ip, "ports": [{"name": "http", "port": 80, "targetPort": 8080}], **spec}}


def endpointslice(ips, name="web-abc", rv="11", svc="web"):
    return {"metadata": {"namespace": "default", "name": name, "resourceVersion": rv,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4", "ports": [{"name": "http", "port": 8080}],
            "endpoints": [{"addresses": [ip], "nodeName": "n2"} for ip in ips]}


def node(name, cidr, rv="1"):
    return {"metadata": {"name": name, "resourceVersion": rv}, "spec": {"podCIDR": cidr, "podCIDRs": [cidr]}}


class Nft:
    """A recording runner that answers `nft -t -j list table` with a scripted listing."""

    def __init__(self, listing=None, fail_apply=0):
        self.listing = listing        # None: the table is absent; an exception: raised
        self.fail_apply = fail_apply
        self.runner = RecordingRunner(respond=self.respond)

    def respond(self, argv, stdin):
        if argv[:4] == ["nft", "-t", "-j", "list"]:
            if self.listing is None:
                raise ABSENT
            if isinstance(self.listing, Exception):
                raise self.listing
            return self.listing
        if argv == ["nft", "-f", "-"] and self.fail_apply:
            self.fail_apply -= 1
            raise CommandError(argv, 1, "Error: Could not process rule: Device or resource busy")
        return ""

    @property
    def scripts(self):
        return [stdin for argv, stdin in self.runner.calls if argv == ["nft", "-f", "-"]]

    @property
    def observations(self):
        return [argv for argv, _ in self.runner.calls if argv[:4] == ["nft", "-t", "-j", "list"]]


def make(nft=None, *, services=(), slices=(), nodes=(), synced=True, **kw):
    nft = nft or Nft()
    proxy = ServiceProxy(node_name="n1", runner=nft.runner, **kw)
    srcs = (FakeSource(services, synced), FakeSource(slices, synced),
            FakeSource(nodes or [node("n1", "10.244.1.0/24"), node("n2", "10.244.2.0/24")], synced))
    proxy.attach(services=srcs[0], endpointslices=srcs[1], nodes=srcs[2])
    return proxy, nft, srcs


def test_nothing_is_applied_before_every_informer_has_listed():
    proxy, nft, (svcs, slices, nodes) = make(services=[service()], synced=False)
    assert proxy.sync() is None and nft.runner.calls == []
    svcs.synced = slices.synced = True
    assert proxy.sync() is None          # nodes not listed yet: pod CIDRs unknown
    nodes.synced = True
    assert proxy.sync().mode == "converge"


def test_first_sync_observes_an_absent_table_and_builds_it_in_one_transaction():
    proxy, nft, _ = make(services=[service()], slices=[endpointslice(["10.244.2.5"])])
    stats = proxy.sync()
    assert nft.observations == [["nft", "-t", "-j", "list", "table", "ip", "shoal-svc"]]
    (script,) = nft.scripts
    assert script.startswith("add table ip shoal-svc\nadd chain ip shoal-svc nat-prerouting")
    assert "delete table" not in script and "flush " not in script
    assert "dnat to 10.244.2.5:8080" in script
    assert "add element ip shoal-svc pod-cidrs { 10.244.1.0/24, 10.244.2.0/24 }" in script
    assert (stats.generation, stats.mode, stats.service_ports, stats.endpoints) == (1, "converge", 1, 1)
    assert proxy.generation == 1 and proxy.last_sync == stats


def test_a_table_left_by_an_earlier_run_is_converged_not_recreated():
    listing = json.dumps({"nftables": [
        {"table": {"family": "ip", "name": "shoal-svc"}},
        {"chain": {"family": "ip", "table": "shoal-svc", "name": "services"}},
        {"chain": {"family": "ip", "table": "shoal-svc", "name": "endpoint-X-default/old/tcp/__10.244.2.9/80"}},
        {"set": {"family": "ip", "table": "shoal-svc", "name": "affinity-Y-default/old/tcp/__10.244.2.9/80"}},
    ]})
    proxy, nft, _ = make(Nft(listing), services=[service()], slices=[endpointslice(["10.244.2.5"])])
    proxy.sync()
    lines = nft.scripts[0].splitlines()
    assert "delete table ip shoal-svc" not in lines and "flush chain ip shoal-svc services" in lines
    assert lines[-2:] == ["delete chain ip shoal-svc endpoint-X-default/old/tcp/__10.244.2.9/80",
                          "delete set ip shoal-svc affinity-Y-default/old/tcp/__10.244.2.9/80"]


def test_an_unreadable_table_is_recreated():
    proxy, nft, _ = make(Nft(CommandError(["nft"], 1, "Error: Operation not permitted")), services=[service()])
    assert proxy.sync().mode == "recreate"
    assert nft.scripts[0].startswith("add table ip shoal-svc\ndelete table ip shoal-svc\nadd table ip shoal-svc\n")


def test_an_unchanged_world_sends_nothing_and_node_status_posts_do_not_wake_it():
    proxy, nft, (svcs, slices, nodes) = make(services=[service()], slices=[endpointslice(["10.244.2.5"])])
    proxy.sync()
    assert proxy.sync().mode == "unchanged" and len(nft.scripts) == 1 and proxy.generation == 1
    proxy._wake.clear()
    n1 = nodes.items["/n1"]
    nodes.put(dict(n1, metadata=dict(n1["metadata"], resourceVersion="2"), status={"conditions": []}))
    assert not proxy._wake.is_set()
    nodes.put(node("n3", "10.244.5.0/24"))
    assert proxy._wake.is_set()
    proxy.sync()
    assert len(nft.scripts) == 2 and "10.244.5.0/24" in nft.scripts[1]
    assert nft.scripts[1].startswith("add table ip shoal-svc\n") and "delete table" not in nft.scripts[1]


def test_every_change_is_a_full_sync_and_the_applied_slices_are_recorded():
    proxy, nft, (svcs, slices, _) = make(services=[service()], slices=[endpointslice(["10.244.2.5"], rv="11")])
    proxy.sync()
    assert proxy.applied_slice("default", "web-abc").resource_version == "11"
    slices.put(endpointslice(["10.244.2.5", "10.244.2.6"], rv="12"))
    assert proxy._wake.is_set()
    assert not proxy.wait_applied("default", "web-abc", "12", timeout=0.01)
    stats = proxy.sync()
    assert stats.generation == 2 and stats.endpoints == 2
    script = nft.scripts[-1]
    assert "dnat to 10.244.2.5:8080" in script and "dnat to 10.244.2.6:8080" in script   # the whole state
    a = proxy.applied_slice("default", "web-abc")
    assert (a.resource_version, a.generation, a.deleted) == ("12", 2, False)
    assert proxy.wait_applied("default", "web-abc", "12", timeout=0) and proxy.wait_applied("default", "web-abc", "3", 0)
    slices.delete(endpointslice([], rv="13"))
    proxy.sync()
    assert proxy.applied_slice("default", "web-abc").deleted
    assert proxy.wait_applied("default", "web-abc", "13", timeout=0)
    assert "goto reject-chain" in nft.scripts[-1] and "dnat" not in nft.scripts[-1]


def test_wait_applied_wakes_when_a_sync_lands():
    proxy, nft, (_, slices, _) = make(services=[service()], slices=[endpointslice(["10.244.2.5"], rv="11")])
    proxy.sync()
    slices.put(endpointslice([], rv="20"))
    got = []
    t = threading.Thread(target=lambda: got.append(proxy.wait_applied("default", "web-abc", "20", timeout=5)))
    t.start()
    time.sleep(0.05)
    proxy.sync()
    t.join(5)
    assert got == [True]


def test_a_refused_convergence_is_retried_at_once_as_a_recreate():
    proxy, nft, _ = make(Nft(fail_apply=1), services=[service()])
    stats = proxy.sync()
    assert stats.mode == "recreate" and len(nft.scripts) == 2
    assert "delete table" not in nft.scripts[0] and "delete table ip shoal-svc" in nft.scripts[1]
    assert proxy.sync().mode == "unchanged"


def test_when_even_the_recreate_fails_the_next_sync_looks_again():
    proxy, nft, _ = make(Nft(fail_apply=2), services=[service()])
    with pytest.raises(CommandError):
        proxy.sync()
    assert proxy.generation == 0 and len(nft.observations) == 1
    assert proxy.sync().mode == "converge"
    assert len(nft.observations) == 2


def test_a_forced_resync_observes_and_applies_even_an_unchanged_plan():
    proxy, nft, _ = make(services=[service()])
    proxy.sync()
    nft.listing = json.dumps({"nftables": [{"chain": {"family": "ip", "table": "shoal-svc", "name": "services"}}]})
    stats = proxy.sync(force=True)
    assert stats.mode == "converge" and len(nft.scripts) == 2 and len(nft.observations) == 2


def test_problems_are_logged_once(caplog):
    lb = [service("a", ip="10.43.0.1", type="LoadBalancer", rv="1"),
          dict(service("b", ip="10.43.0.2", type="LoadBalancer", rv="2"),
               metadata={"namespace": "default", "name": "b", "creationTimestamp": "2024-02-01T00:00:00Z"})]
    proxy, nft, _ = make(services=lb)
    with caplog.at_level(logging.WARNING, logger="shoal.agent.serviceproxy"):
        proxy.sync()
        proxy.sync(force=True)
    msgs = [r.getMessage() for r in caplog.records if "already published" in r.getMessage()]
    assert msgs == ["service proxy: service default/b: port 80/TCP of default/b:http is already published "
                    "for default/a:http"]


def test_reserved_ports_are_read_at_each_sync():
    reserved = {}
    proxy, nft, _ = make(services=[service("api", type="LoadBalancer")], reserved_ports=reserved,
                         slices=[endpointslice(["10.244.2.5"], svc="api", name="api-x")])
    proxy.sync()
    assert "add element ip shoal-svc service-nodeports { tcp . 80 : goto external-" in nft.scripts[-1]
    reserved[80] = "the shoal agent's log endpoint"
    proxy.sync()
    assert "add element ip shoal-svc service-nodeports" not in nft.scripts[-1]


def test_the_loop_debounces_a_burst_into_one_transaction_and_stop_keeps_the_rules():
    proxy, nft, (svcs, slices, _) = make(services=[service()], debounce=0.2)
    proxy.start()
    try:
        deadline = time.time() + 5
        while proxy.generation < 1 and time.time() < deadline:
            proxy.request_sync()
            time.sleep(0.02)
        assert proxy.generation == 1
        for i in range(10):
            slices.put(endpointslice([f"10.244.2.{i + 2}"], rv=str(20 + i)))
        deadline = time.time() + 5
        while not proxy.wait_applied("default", "web-abc", "29", timeout=0.05) and time.time() < deadline:
            pass
        assert proxy.generation == 2, "ten slice updates within the debounce make one transaction"
    finally:
        proxy.stop()
    assert not any("delete table" in s for s in nft.scripts)


def test_the_loop_retries_a_failed_sync():
    proxy, nft, _ = make(Nft(fail_apply=2), services=[service()], debounce=0, retry_base=0.01)
    proxy.start()
    try:
        proxy.request_sync()
        deadline = time.time() + 5
        while proxy.generation < 1 and time.time() < deadline:
            time.sleep(0.01)
        assert proxy.generation == 1 and len(nft.scripts) == 3
    finally:
        proxy.stop()


def test_cleanup_on_stop_removes_the_table():
    proxy, nft, _ = make(services=[service()], cleanup_on_stop=True)
    proxy.sync()
    proxy.stop()
    assert nft.scripts[-1] == "add table ip shoal-svc\ndelete table ip shoal-svc\n"


def test_remove_table_only_when_there_is_one():
    nft = Nft()
    assert remove_table(nft.runner) is False and nft.scripts == []
    nft.listing = "{}"
    assert remove_table(nft.runner, "shoal-svc-lab0") is True
    assert nft.scripts == ["add table ip shoal-svc-lab0\ndelete table ip shoal-svc-lab0\n"]


def test_node_pod_cidrs():
    nodes = [node("n1", "10.244.1.0/24"), node("n2", "10.244.2.0/24"), {"metadata": {"name": "n3"}, "spec": {}},
             {"metadata": {"name": "n4"}, "spec": {"podCIDR": "10.244.4.0/24"}}]
    assert node_pod_cidrs(nodes, "n1") == ("10.244.1.0/24", ["10.244.1.0/24", "10.244.2.0/24", "10.244.4.0/24"])
    assert node_pod_cidrs(nodes, "n3") == (None, ["10.244.1.0/24", "10.244.2.0/24", "10.244.4.0/24"])
