"""Property: whatever JSON arrives, `validate` answers with a result or a 400/422 — never another exception.

Hypothesis replaces a random node of a realistic manifest with a random JSON
value (or inserts a random key); the API server turns BadRequest/Invalid into
Status replies, so any other exception here would be a 500.
"""
import copy

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shoal.machinery.api import errors
from shoal.machinery.api.models import KINDS, validate

pytestmark = pytest.mark.unit

MANIFESTS = {
    "Deployment": {
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"},
                                             "matchExpressions": [{"key": "t", "operator": "In", "values": ["a"]}]},
                 "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}},
                 "template": {"metadata": {"labels": {"app": "web", "t": "a"}},
                              "spec": {"containers": [{
                                  "name": "c", "image": "nginx:1", "ports": [{"containerPort": 80, "name": "http"}],
                                  "env": [{"name": "A", "value": "b"}],
                                  "resources": {"limits": {"cpu": "1"}, "requests": {"memory": "1Mi"}},
                                  "volumeMounts": [{"name": "v", "mountPath": "/v"}],
                                  "livenessProbe": {"httpGet": {"port": "http"}}}],
                                  "volumes": [{"name": "v", "emptyDir": {}}],
                                  "tolerations": [{"key": "k", "operator": "Exists"}]}}},
        "status": {"replicas": 2, "conditions": [{"type": "Available", "status": "True"}]},
    },
    "Node": {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1"},
             "spec": {"podCIDR": "10.244.1.0/24", "taints": [{"key": "a", "effect": "NoSchedule"}]},
             "status": {"capacity": {"cpu": "2"}, "addresses": [{"type": "InternalIP", "address": "10.0.0.1"}],
                        "daemonEndpoints": {"kubeletEndpoint": {"Port": 1}}}},
    "Event": {"metadata": {"name": "e", "namespace": "d"}, "involvedObject": {"kind": "Pod", "namespace": "d"},
              "type": "Normal", "eventTime": "2024-05-01T12:00:00Z", "series": {"count": 1}},
    "Pod": {"metadata": {"name": "p", "namespace": "d"},
            "spec": {"containers": [{"name": "c", "image": "busybox:1", "ports": [{"containerPort": 1, "hostPort": 2}],
                                     "resources": {"limits": {"cpu": "1", "memory": "1Gi"}},
                                     "readinessProbe": {"tcpSocket": {"port": 1}, "periodSeconds": 3},
                                     "securityContext": {"runAsUser": 1, "capabilities": {"drop": ["ALL"]}}}],
                     "initContainers": [{"name": "i", "image": "busybox:1"}], "nodeSelector": {"a": "b"},
                     "volumes": [{"name": "h", "hostPath": {"path": "/x", "type": "Directory"}}]},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}],
                       "containerStatuses": [{"name": "c", "restartCount": 0,
                                              "state": {"terminated": {"exitCode": 1}}}]}},
    "Lease": {"metadata": {"name": "l", "namespace": "d"}, "spec": {"leaseDurationSeconds": 4}},
    "Namespace": {"metadata": {"name": "ns"}, "spec": {"finalizers": ["kubernetes"]}},
    "DeleteOptions": {"propagationPolicy": "Background", "preconditions": {"uid": "x"}},
    "ConfigMap": {"metadata": {"name": "c", "namespace": "d"}, "data": {"a.conf": "x=1"},
                  "binaryData": {"b": "AAE="}, "immutable": False},
    "Secret": {"metadata": {"name": "s", "namespace": "d", "annotations": {"a": "b"}}, "type": "kubernetes.io/tls",
               "data": {"tls.crt": "Yg==", "tls.key": ""}, "stringData": {"extra": "v"}},
    "Service": {"metadata": {"name": "web", "namespace": "d"},
                "spec": {"type": "LoadBalancer", "selector": {"app": "web"}, "clusterIP": "10.43.0.5",
                         "ports": [{"name": "http", "port": 80, "targetPort": "http", "nodePort": 30080},
                                   {"name": "dns", "port": 53, "protocol": "UDP", "appProtocol": "dns"}],
                         "sessionAffinity": "ClientIP", "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 60}},
                         "ipFamilyPolicy": "SingleStack", "ipFamilies": ["IPv4"], "publishNotReadyAddresses": True},
                "status": {"loadBalancer": {"ingress": [{"ip": "192.168.1.2"}, {"hostname": "lb.example"}]}}},
    "Endpoints": {"metadata": {"name": "web", "namespace": "d"},
                  "subsets": [{"addresses": [{"ip": "10.244.1.2", "nodeName": "n1",
                                              "targetRef": {"kind": "Pod", "name": "p", "namespace": "d"}}],
                               "notReadyAddresses": [{"ip": "10.244.1.3", "hostname": "h"}],
                               "ports": [{"name": "http", "port": 8080}, {"name": "dns", "port": 53,
                                                                          "protocol": "UDP"}]}]},
    "EndpointSlice": {"metadata": {"name": "web-x1", "namespace": "d", "labels": {"kubernetes.io/service-name": "web"}},
                      "addressType": "IPv4",
                      "endpoints": [{"addresses": ["10.244.1.2"], "nodeName": "n1", "hostname": "h",
                                     "conditions": {"ready": True, "serving": True, "terminating": False},
                                     "targetRef": {"kind": "Pod", "name": "p", "namespace": "d", "uid": "u"}}],
                      "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]},
}

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=True) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6)


def _nodes(obj, path=()):
    yield path
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _nodes(v, path + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _nodes(v, path + (i,))


def _replace(obj, path, value):
    if not path:
        return value
    cur = obj
    for p in path[:-1]:
        cur = cur[p]
    cur[path[-1]] = value
    return obj


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(kind=st.sampled_from(sorted(MANIFESTS)), data=st.data(), value=json_values, insert=st.booleans())
def test_validate_never_crashes(kind, data, value, insert):
    obj = copy.deepcopy(MANIFESTS[kind])
    paths = list(_nodes(obj))
    path = data.draw(st.sampled_from(paths))
    if insert:
        target = obj
        for p in path:
            target = target[p]
        if isinstance(target, dict):
            target[data.draw(st.text(max_size=8))] = value
    else:
        obj = _replace(obj, path, value)
    try:
        out = validate(kind, obj)
    except (errors.BadRequest, errors.Invalid) as e:
        assert e.message
        e.status()  # renders
        return
    assert isinstance(out, dict)
    assert validate(kind, out) == out  # a stored object re-validates to itself


def test_every_kind_has_a_fuzz_manifest_or_is_covered_elsewhere():
    # ReplicaSet and Scale share their shapes with Deployment's spec.
    assert set(KINDS) - set(MANIFESTS) == {"ReplicaSet", "Scale"}
