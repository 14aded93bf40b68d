"""What the agent writes about its node: labels, annotations and status (pure)."""
import pytest

from shoal.agent.registration import HostInfo, build_node_status, host_capacity, node_meta

pytestmark = pytest.mark.unit


def test_node_meta_adds_labels_and_the_overlay_annotations():
    assert node_meta(node_name="n1", address="10.0.0.1", vtep_mac=None, labels={"zone": "a"}) == {
        "labels": {"kubernetes.io/hostname": "n1", "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                   "zone": "a"},
        "annotations": {"shoal.io/underlay-ip": "10.0.0.1"}}
    meta = node_meta(node_name="n1", address="10.0.0.1", vtep_mac="02:00:00:00:00:01", labels={})
    assert meta["annotations"]["shoal.io/vtep-mac"] == "02:00:00:00:00:01"


def test_capacity_overrides_and_host_values():
    assert host_capacity(cpu="4", memory="8Gi", max_pods=20) == {"cpu": "4", "memory": "8Gi", "pods": "20"}
    cap = host_capacity()
    assert int(cap["cpu"]) >= 1 and cap["memory"].endswith("Ki") and cap["pods"] == "110"


def test_node_status():
    st = build_node_status(node_name="n1", address="10.0.0.1", capacity={"cpu": "2", "memory": "1Ki", "pods": "110"},
                           now="2024-05-01T10:00:05Z", ready_since="2024-05-01T10:00:00Z", version="0.1.0",
                           runtime_version="runc://1.1", kubelet_port=10250,
                           host=HostInfo(kernel_version="6.1", os_image="Debian", machine_id="m", boot_id="b"))
    assert st["allocatable"] == st["capacity"] == {"cpu": "2", "memory": "1Ki", "pods": "110"}
    assert st["addresses"] == [{"type": "InternalIP", "address": "10.0.0.1"}, {"type": "Hostname", "address": "n1"}]
    (ready,) = st["conditions"]
    assert (ready["type"], ready["status"], ready["reason"]) == ("Ready", "True", "KubeletReady")
    assert (ready["lastHeartbeatTime"], ready["lastTransitionTime"]) == ("2024-05-01T10:00:05Z", "2024-05-01T10:00:00Z")
    assert st["nodeInfo"]["kubeletVersion"] == "shoal-0.1.0" and st["nodeInfo"]["kernelVersion"] == "6.1"
    assert st["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}
    # every field the official Python client's V1NodeSystemInfo requires is there
    assert set(st["nodeInfo"]) >= {"architecture", "bootID", "containerRuntimeVersion", "kernelVersion",
                                   "kubeProxyVersion", "kubeletVersion", "machineID", "operatingSystem", "osImage",
                                   "systemUUID"}


def test_system_uuid_falls_back_to_the_machine_id():
    from shoal.agent.registration import _uuid_of
    assert _uuid_of("3D1219C7C4C5404AAA1F6D2A48ADFDA4") == "3d1219c7-c4c5-404a-aa1f-6d2a48adfda4"
    assert _uuid_of("short") == ""
