"""labnet against RecordingNetlink: layout, idempotence, repair, destroy."""
import pytest

from shoal.agent.network import RecordingNetlink
from shoal.testkit.labnet import create_lab_network, destroy_lab_network, lab_layout

pytestmark = pytest.mark.unit


def test_layout_names_and_addresses():
    lab = lab_layout("lab1", 3)
    assert lab.lab_netns == "lab1-lab" and lab.gateway == "192.168.213.1"
    assert [(h.netns, h.ip) for h in lab.hosts] == [
        ("lab1-h1", "192.168.213.11"), ("lab1-h2", "192.168.213.12"), ("lab1-h3", "192.168.213.13")]


@pytest.mark.parametrize("name,subnet,n,needle", [
    ("Lab", "192.168.213.0/24", 2, "lab name"),
    ("lab", "8.8.8.0/24", 2, "not a private"),
    ("lab", "192.168.213.0/28", 9, "do not fit"),
])
def test_layout_rejects(name, subnet, n, needle):
    with pytest.raises(ValueError, match=needle):
        lab_layout(name, n, subnet)


def test_create_is_idempotent_and_repairs():
    nl = RecordingNetlink()
    lab = create_lab_network("lab1", 2, netlink=nl)
    assert nl.ns("lab1-lab").links["br0"].up and nl.ns("lab1-lab").addrs["br0"] == ["192.168.213.1/24"]
    for h in lab.hosts:
        assert nl.ns("lab1-lab").links[h.name].master == "br0"
        assert nl.ns(h.netns).addrs["eth0"] == [f"{h.ip}/24"] and nl.ns(h.netns).links["eth0"].up
    nl.calls.clear()
    create_lab_network("lab1", 2, netlink=nl)
    assert not [c for c in nl.calls if c[0] in ("link_add", "netns_remove", "link_del")]
    nl.link_del("h2", ns="lab1-lab")               # a crash mid-build
    create_lab_network("lab1", 2, netlink=nl)
    assert nl.ns("lab1-h2").links["eth0"].up and nl.ns("lab1-lab").links["h2"].master == "br0"
    create_lab_network("lab1", 1, netlink=nl)       # shrink
    assert "lab1-h2" not in nl.spaces and "h2" not in nl.ns("lab1-lab").links


def test_destroy_removes_prefix_only_pods_first():
    nl = RecordingNetlink()
    create_lab_network("lab1", 2, netlink=nl)
    create_lab_network("lab10", 1, netlink=nl)
    nl.netns_create("lab1-h1-pod1234")
    removed = destroy_lab_network("lab1", netlink=nl)
    assert removed == ["lab1-h1-pod1234", "lab1-h1", "lab1-h2", "lab1-lab"]
    assert sorted(k for k in nl.spaces if k) == ["lab10-h1", "lab10-lab"]
    assert destroy_lab_network("lab1", netlink=nl) == []
