"""IPAM: allocation, persistence across instances, exhaustion, reuse after free."""
import threading

import pytest

from shoal.agent.network.ipam import IPExhaustedError, NodeState, gateway_of

pytestmark = pytest.mark.unit


def test_first_addresses_skip_network_and_gateway(tmp_path):
    st = NodeState(str(tmp_path))
    st.set_pod_cidr("10.244.3.0/24")
    assert gateway_of("10.244.3.0/24") == "10.244.3.1"
    assert st.allocate("uid-a", name="a").ip == "10.244.3.2"
    assert st.allocate("uid-b", name="b").ip == "10.244.3.3"


def test_same_uid_same_ip_and_survives_a_restart(tmp_path):
    st = NodeState(str(tmp_path))
    st.set_pod_cidr("10.244.3.0/24")
    ip = st.allocate("uid-a", name="a", netns="shoal-uid-a", veth="veth00000000").ip
    assert st.allocate("uid-a", name="a").ip == ip
    again = NodeState(str(tmp_path))          # a new agent process
    rec = again.get("uid-a")
    assert rec is not None and rec.ip == ip and rec.netns == "shoal-uid-a" and rec.veth == "veth00000000"
    assert again.allocate("uid-a").ip == ip
    assert sorted(again.pods()) == ["uid-a"]


def test_exhaustion_names_the_cidr_and_pod(tmp_path):
    st = NodeState(str(tmp_path))
    st.set_pod_cidr("10.244.9.0/29")          # .2 .. .6 usable
    got = [st.allocate(f"u{i}").ip for i in range(5)]
    assert got == [f"10.244.9.{i}" for i in range(2, 7)]
    with pytest.raises(IPExhaustedError) as ei:
        st.allocate("u-extra", name="web-7")
    assert "10.244.9.0/29" in str(ei.value) and "web-7" in str(ei.value)


def test_reuse_after_free_is_round_robin(tmp_path):
    st = NodeState(str(tmp_path))
    st.set_pod_cidr("10.244.9.0/29")
    for i in range(5):
        st.allocate(f"u{i}")
    freed = st.free("u1")
    assert freed is not None and freed.ip == "10.244.9.3"
    assert st.free("u1") is None              # idempotent
    assert st.allocate("new").ip == "10.244.9.3"
    # with room left, a just-freed address is not handed out first
    st.free("new")
    st.free("u4")                              # .6 and .3 free, last handed out .3
    assert st.allocate("n2").ip == "10.244.9.6"


def test_allocation_outside_a_changed_cidr_is_replaced(tmp_path):
    st = NodeState(str(tmp_path))
    st.set_pod_cidr("10.244.1.0/24")
    st.allocate("u")
    assert st.set_pod_cidr("10.244.2.0/24") == "10.244.1.0/24"
    assert st.allocate("u").ip == "10.244.2.2"


def test_allocate_without_cidr_says_what_to_do(tmp_path):
    with pytest.raises(RuntimeError, match="ensure_node"):
        NodeState(str(tmp_path)).allocate("u", name="web-1")


def test_corrupt_state_file_is_named(tmp_path):
    st = NodeState(str(tmp_path))
    (tmp_path / "network.json").write_text("{not json")
    with pytest.raises(RuntimeError, match="network.json"):
        st.pods()


def test_concurrent_workers_get_distinct_addresses(tmp_path):
    NodeState(str(tmp_path)).set_pod_cidr("10.244.5.0/24")
    out: dict[str, str] = {}
    lock = threading.Lock()

    def worker(k: int) -> None:
        st = NodeState(str(tmp_path))         # each worker with its own handle
        for i in range(10):
            ip = st.allocate(f"w{k}-{i}").ip
            with lock:
                out[f"w{k}-{i}"] = ip
    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 40 and len(set(out.values())) == 40
    assert {u: r.ip for u, r in NodeState(str(tmp_path)).pods().items()} == out


def test_a_netns_or_veth_name_is_never_shared(tmp_path):
    st = NodeState(str(tmp_path))
    st.set_pod_cidr("10.244.3.0/24")
    st.allocate("c0ffee00-0000-1", name="web", netns="shoal-c0ffee00-000", veth="veth11111111")
    with pytest.raises(RuntimeError, match=r"pod client .* would share netns shoal-c0ffee00-000 with pod web"):
        st.allocate("c0ffee00-0000-2", name="client", netns="shoal-c0ffee00-000", veth="veth22222222")
    with pytest.raises(RuntimeError, match="veth veth11111111"):
        st.allocate("other", name="x", netns="shoal-other", veth="veth11111111")
    assert sorted(st.pods()) == ["c0ffee00-0000-1"]


def test_a_write_by_another_instance_is_seen_and_a_caller_cannot_change_the_cache(tmp_path):
    st = NodeState(str(tmp_path))
    st.set_pod_cidr("10.244.3.0/24")
    assert st.allocate("uid-a").ip == "10.244.3.2"
    other = NodeState(str(tmp_path))          # another process with the same state dir
    assert other.allocate("uid-b").ip == "10.244.3.3"
    assert sorted(st.pods()) == ["uid-a", "uid-b"]            # not the state it read last
    assert st.allocate("uid-c").ip == "10.244.3.4"           # round-robin after other's .3
    st.pods()["uid-a"].ip = "10.0.0.1"                       # a caller's copy, not the state
    st._read()["pods"]["uid-a"]["ip"] = "10.0.0.1"
    assert st.get("uid-a").ip == "10.244.3.2"
    (tmp_path / "network.json").write_text("{not json")
    with pytest.raises(RuntimeError, match="corrupt"):
        st.pods()
