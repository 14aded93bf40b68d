"""shoal.machinery.api.models.validate with `old`: immutability rules on update."""
import copy

import pytest

from shoal.machinery.api import errors
from shoal.machinery.api.models import validate

pytestmark = pytest.mark.unit

DEPLOY = {
    "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web", "namespace": "default"},
    "spec": {"selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}},
                          "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27"}]}}},
}
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "default"},
       "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}],
                "tolerations": [{"key": "a", "operator": "Exists"}]}}


def stored(kind, obj):
    return validate(kind, copy.deepcopy(obj))


def test_deployment_template_and_replicas_may_change():
    old = stored("Deployment", DEPLOY)
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 5
    new["spec"]["template"]["spec"]["containers"][0]["image"] = "nginx:1.28"
    assert validate("Deployment", new, old=old)["spec"]["replicas"] == 5


@pytest.mark.parametrize("kind", ["Deployment", "ReplicaSet"])
def test_selector_is_immutable(kind):
    base = {**copy.deepcopy(DEPLOY), "kind": kind}
    old = stored(kind, base)
    new = copy.deepcopy(old)
    new["spec"]["selector"] = {"matchLabels": {"app": "web", "tier": "x"}}
    new["spec"]["template"]["metadata"]["labels"]["tier"] = "x"
    with pytest.raises(errors.Invalid) as e:
        validate(kind, new, old=old)
    (cause,) = e.value.causes
    assert (cause.field, cause.reason) == ("spec.selector", "FieldValueInvalid")
    assert cause.message.endswith("field is immutable")


def test_unchanged_selector_written_differently_defaults_equal():
    """The stored (defaulted) object and the user's sparse manifest compare equal."""
    old = stored("Deployment", DEPLOY)
    validate("Deployment", copy.deepcopy(DEPLOY), old=old)


def test_name_is_immutable():
    old = stored("Deployment", DEPLOY)
    new = copy.deepcopy(old)
    new["metadata"]["name"] = "web2"
    with pytest.raises(errors.Invalid, match="metadata.name: Invalid value: \"web2\": field is immutable"):
        validate("Deployment", new, old=old)


@pytest.mark.parametrize("change", [
    lambda s: s["containers"][0].__setitem__("image", "nginx:1.28"),
    lambda s: s.__setitem__("nodeName", "node-a"),
    lambda s: s.__setitem__("activeDeadlineSeconds", 30),
    lambda s: s["tolerations"].append({"key": "b", "operator": "Exists"}),
    lambda s: None,
], ids=["image", "nodeName", "activeDeadlineSeconds", "toleration-added", "nothing"])
def test_pod_mutable_fields(change):
    old = stored("Pod", POD)
    new = copy.deepcopy(old)
    change(new["spec"])
    validate("Pod", new, old=old)


@pytest.mark.parametrize("change,diff", [
    (lambda s: s.__setitem__("restartPolicy", "Never"), "spec.restartPolicy"),
    (lambda s: s["containers"][0].__setitem__("command", ["sh"]), "spec.containers[0].command"),
    (lambda s: s["containers"].append({"name": "b", "image": "x:1"}), "spec.containers"),
    (lambda s: s.__setitem__("tolerations", []), "spec.tolerations"),
    (lambda s: s.__setitem__("initContainers", [{"name": "i", "image": "x:1"}]), "spec.initContainers"),
], ids=["restartPolicy", "command", "container-added", "toleration-removed", "init-added"])
def test_pod_spec_otherwise_immutable(change, diff):
    old = stored("Pod", POD)
    new = copy.deepcopy(old)
    change(new["spec"])
    with pytest.raises(errors.Invalid) as e:
        validate("Pod", new, old=old)
    (cause,) = e.value.causes
    assert cause.field == "spec" and cause.reason == "FieldValueForbidden"
    assert "pod updates may not change fields other than" in cause.message
    assert cause.message.endswith(f"{diff} changed")


def test_pod_status_update_ignores_spec():
    old = stored("Pod", POD)
    new = copy.deepcopy(old)
    new["spec"]["restartPolicy"] = "Never"  # the server keeps the stored spec on /status
    new["status"] = {"phase": "Running"}
    assert validate("Pod", new, old=old, subresource="status")["status"]["phase"] == "Running"


def test_node_pod_cidr_set_once():
    old = stored("Node", {"metadata": {"name": "n1"}})
    with_cidr = validate("Node", {"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.1.0/24"}}, old=old)
    changed = copy.deepcopy(with_cidr)
    changed["spec"]["podCIDR"] = "10.244.2.0/24"
    with pytest.raises(errors.Invalid, match="spec.podCIDR: Forbidden: node updates may not change podCIDR"):
        validate("Node", changed, old=with_cidr)


def test_scale_update():
    old = {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": "web", "namespace": "default"},
           "spec": {"replicas": 2}}
    new = copy.deepcopy(old)
    new["spec"]["replicas"] = 4
    assert validate("Deployment", new, old=old, subresource="scale")["spec"]["replicas"] == 4
