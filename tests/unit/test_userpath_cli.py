"""The user's path, pure parts: `shoal up`'s host-network settings (validation, names, what
`shoal down` reads back), `shoal images --data-dir` resolution, empty `get -o json`, and the
table parsing the e2e demo test relies on."""
from __future__ import annotations

import io
import json
from argparse import Namespace
from datetime import datetime, timezone

import pytest

from shoal.cli import main as cli_main
from shoal.cli.cmd_images import resolve_agent_dir
from shoal.cli.cmd_up import DEFAULT_NETWORK, HostNetwork, validate_host_network
from cli_fakeapi import FakeApi
from tests.e2e.userpath_fixtures import table_column

pytestmark = pytest.mark.unit


def test_default_host_network_is_what_the_docs_say():
    assert DEFAULT_NETWORK == HostNetwork("10.244.0.0/16", "shoal0", 8472, 10250, "shoal-")
    assert DEFAULT_NETWORK.vxlan_device == "shoal.1"
    assert validate_host_network(DEFAULT_NETWORK) == []


@pytest.mark.parametrize("bridge, device", [("sht1a2b3c", "sht1a2b3c.1"), ("averyverylongbr", "averyverylong.1")])
def test_vxlan_device_follows_the_bridge_within_15_chars(bridge, device):
    net = HostNetwork(bridge=bridge)
    assert net.vxlan_device == device and len(net.vxlan_device) <= 15
    assert validate_host_network(net) == []


@pytest.mark.parametrize("kw, flag", [
    ({"bridge": "a b"}, "--bridge"), ({"bridge": "x" * 16}, "--bridge"), ({"bridge": ""}, "--bridge"),
    ({"cluster_cidr": "10.1.0.0/25"}, "--cluster-cidr"), ({"cluster_cidr": "nonsense"}, "--cluster-cidr"),
    ({"cluster_cidr": "fd00::/64"}, "--cluster-cidr"), ({"vxlan_port": 0}, "--vxlan-port"),
    ({"kubelet_port": 70000}, "--kubelet-port"), ({"netns_prefix": "a/b"}, "--pod-netns-prefix"),
])
def test_bad_host_network_names_the_flag(kw, flag):
    problems = validate_host_network(HostNetwork(**kw))
    assert len(problems) == 1 and problems[0].startswith(flag), problems


def test_host_network_round_trips_through_the_data_dir(tmp_path):
    net = HostNetwork(cluster_cidr="10.99.0.0/16", bridge="t0", vxlan_port=9000, kubelet_port=0, netns_prefix="t0-")
    net.save(tmp_path)
    assert HostNetwork.load(tmp_path) == net


def test_host_network_load_defaults_when_absent_or_partial(tmp_path):
    assert HostNetwork.load(tmp_path) == DEFAULT_NETWORK          # never ran, or an older shoal up
    (tmp_path / "up.json").write_text(json.dumps({"bridge": "b1", "unknown": 1}))
    assert HostNetwork.load(tmp_path) == HostNetwork(bridge="b1")
    (tmp_path / "up.json").write_text("{not json")
    assert HostNetwork.load(tmp_path) == DEFAULT_NETWORK


def test_from_args_takes_every_flag():
    args = Namespace(cluster_cidr="10.5.0.0/16", bridge="b", vxlan_port=1, kubelet_port=2, pod_netns_prefix="p-")
    assert HostNetwork.from_args(args) == HostNetwork("10.5.0.0/16", "b", 1, 2, "p-")


def test_images_data_dir_accepts_the_up_data_dir(tmp_path):
    agent_dir = tmp_path / "agentonly"
    (agent_dir / "images").mkdir(parents=True)
    assert resolve_agent_dir(agent_dir) == agent_dir                       # an agent's data dir
    up = tmp_path / "up"
    (up / "agent" / "images").mkdir(parents=True)
    assert resolve_agent_dir(up) == up / "agent"                           # shoal up's, with images
    fresh = tmp_path / "fresh"
    (fresh / "server").mkdir(parents=True)
    assert resolve_agent_dir(fresh) == fresh / "agent"                     # shoal up's, before a pull
    assert resolve_agent_dir(tmp_path / "nothing") == tmp_path / "nothing"


@pytest.mark.parametrize("fmt, parse", [("json", json.loads), ("yaml", __import__("yaml").safe_load)])
def test_get_empty_collection_prints_an_empty_list(fmt, parse):
    out, err = io.StringIO(), io.StringIO()
    rc = cli_main.main(["get", "pods", "-A", "-o", fmt], stdout=out, stderr=err, stdin=io.StringIO(""),
                       now=lambda: datetime(2024, 5, 1, tzinfo=timezone.utc), client_factory=lambda ctx: FakeApi())
    assert rc == 0, err.getvalue()
    doc = parse(out.getvalue())
    assert doc["kind"] == "List" and doc["items"] == []
    assert "No resources found" not in err.getvalue()


def test_table_column_reads_the_last_restarts():
    out = ("NAME                     READY   STATUS    RESTARTS      AGE   IP\n"
           "flaky-b67bf4744-5v7px    1/1     Running   0             8s    10.244.0.5\n"
           "web-594d4c8bbd-9lqdv     1/1     Running   0             8s    10.244.0.3\n"
           "\n"
           "\x1b[2m$ shoal get pods -o wide\x1b[0m\n"
           "NAME                     READY   STATUS    RESTARTS      AGE   IP\n"
           "flaky-b67bf4744-5v7px    1/1     Running   2 (3s ago)    50s   10.244.0.5\n")
    assert table_column(out, header_has="RESTARTS", row_prefix="flaky-", column="RESTARTS") == ["0", "2"]
