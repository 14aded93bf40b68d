"""The official Python `kubernetes` client works against shoal server."""
import threading

import pytest

kubernetes = pytest.importorskip("kubernetes")
from kubernetes import client as k8s, watch as k8s_watch  # noqa: E402


@pytest.fixture
def apps(api):
    cfg = k8s.Configuration()
    cfg.host = api.url
    cfg.api_key = {"authorization": api.admin_token}
    cfg.api_key_prefix = {"authorization": "Bearer"}
    with k8s.ApiClient(cfg) as ac:
        yield k8s.AppsV1Api(ac)


def test_create_get_list_watch_deployment(apps):
    body = k8s.V1Deployment(
        api_version="apps/v1", kind="Deployment",
        metadata=k8s.V1ObjectMeta(name="web", labels={"app": "web"}),
        spec=k8s.V1DeploymentSpec(
            replicas=2, selector=k8s.V1LabelSelector(match_labels={"app": "web"}),
            template=k8s.V1PodTemplateSpec(
                metadata=k8s.V1ObjectMeta(labels={"app": "web"}),
                spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="web", image="127.0.0.1:5000/web:v1",
                                                               ports=[k8s.V1ContainerPort(container_port=8080)])]))))
    created = apps.create_namespaced_deployment("default", body)
    assert created.metadata.uid and created.spec.replicas == 2
    got = apps.read_namespaced_deployment("web", "default")
    assert got.spec.template.spec.containers[0].ports[0].protocol == "TCP"
    lst = apps.list_namespaced_deployment("default", label_selector="app=web")
    assert [d.metadata.name for d in lst.items] == ["web"] and lst.metadata.resource_version

    events = []
    w = k8s_watch.Watch()

    def scale_later():
        apps.patch_namespaced_deployment_scale("web", "default", {"spec": {"replicas": 3}})

    t = threading.Timer(0.5, scale_later)
    t.start()
    for ev in w.stream(apps.list_namespaced_deployment, "default", timeout_seconds=3):
        events.append((ev["type"], ev["object"].spec.replicas))
        if len(events) == 2:
            w.stop()
    t.join()
    assert events == [("ADDED", 2), ("MODIFIED", 3)]
    with pytest.raises(k8s.ApiException) as ei:
        apps.read_namespaced_deployment("nope", "default")
    assert ei.value.status == 404
