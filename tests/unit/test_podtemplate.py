"""machinery.api.podtemplate: Kubernetes' EqualIgnoreHash, the one rule the Deployment controller
and the CLI (rollout undo, describe deployment) decide "same template" by."""
import pytest

from shoal.machinery.api.defaults import default_pull_policy
from shoal.machinery.api.models.defaults import default_image_pull_policy
from shoal.machinery.api.podtemplate import (POD_TEMPLATE_HASH_LABEL, REVISION_ANNOTATION, find_new_replicaset,
                                             revision_of, templates_equal, without_hash_label)

pytestmark = pytest.mark.unit


def tmpl(labels=None, **container):
    c = {"name": "web", "image": "web:v1", **container}
    return {"metadata": {"labels": {"app": "web", **(labels or {})}}, "spec": {"containers": [c]}}


def with_spec(t, **spec):
    t["spec"].update(spec)
    return t


PROBE = {"httpGet": {"path": "/healthz", "port": 80}}


@pytest.mark.parametrize("a, b, equal", [
    # the hash label is not compared
    (tmpl(), tmpl({POD_TEMPLATE_HASH_LABEL: "5d8f7c6b9"}), True),
    (tmpl({POD_TEMPLATE_HASH_LABEL: "a"}), tmpl({POD_TEMPLATE_HASH_LABEL: "b"}), True),
    # other labels are
    (tmpl(), tmpl({"tier": "front"}), False),
    # unset, null, {} and [] are the same
    (tmpl(), tmpl(env=None, resources={}, ports=[]), True),
    (tmpl(), {**tmpl(), "metadata": {"labels": {"app": "web"}, "annotations": {}}}, True),
    # creationTimestamp is not part of a template — the CLI used to compare it
    (tmpl(), {**tmpl(), "metadata": {"labels": {"app": "web"}, "creationTimestamp": "2024-05-01T10:00:00Z"}}, True),
    # a field at its default equals the field left out — the CLI used to say "different"
    (tmpl(), with_spec(tmpl(), restartPolicy="Always", dnsPolicy="ClusterFirst", terminationGracePeriodSeconds=30,
                       schedulerName="default-scheduler"), True),
    (tmpl(), tmpl(terminationMessagePath="/dev/termination-log", terminationMessagePolicy="File"), True),
    (tmpl(ports=[{"containerPort": 80}]), tmpl(ports=[{"containerPort": 80, "protocol": "TCP"}]), True),
    (tmpl(readinessProbe=PROBE), tmpl(readinessProbe={**PROBE, "initialDelaySeconds": 0, "timeoutSeconds": 1,
                                                      "periodSeconds": 10, "successThreshold": 1,
                                                      "failureThreshold": 3}), True),
    (tmpl(readinessProbe=PROBE), tmpl(readinessProbe={"httpGet": {**PROBE["httpGet"], "scheme": "HTTP"}}), True),
    # ... but not a value other than the default
    (tmpl(), with_spec(tmpl(), restartPolicy="OnFailure"), False),
    (tmpl(readinessProbe=PROBE), tmpl(readinessProbe={**PROBE, "initialDelaySeconds": 5}), False),
    (tmpl(), tmpl(image="web:v2"), False),
    # imagePullPolicy: its default depends on the tag
    (tmpl(image="httpd:1.0"), tmpl(image="httpd:1.0", imagePullPolicy="IfNotPresent"), True),
    (tmpl(image="httpd:1.0"), tmpl(image="httpd:1.0", imagePullPolicy="Always"), False),
    (tmpl(image="httpd"), tmpl(image="httpd", imagePullPolicy="Always"), True),
    (tmpl(image="httpd:latest"), tmpl(image="httpd:latest", imagePullPolicy="Always"), True),
    (tmpl(image="httpd@sha256:" + "a" * 64), tmpl(image="httpd@sha256:" + "a" * 64, imagePullPolicy="IfNotPresent"),
     True),
    # tag and digest: the tag decides (the controller's copy of the rule used to say IfNotPresent here)
    (tmpl(image="httpd:latest@sha256:" + "a" * 64),
     tmpl(image="httpd:latest@sha256:" + "a" * 64, imagePullPolicy="Always"), True),
    (None, {}, True),
])
def test_templates_equal(a, b, equal):
    assert templates_equal(a, b) is equal
    assert templates_equal(b, a) is equal


@pytest.mark.parametrize("image", [
    "httpd", "httpd:1.0", "httpd:latest", "registry.local:5000/team/httpd", "registry.local:5000/httpd:2",
    "httpd@sha256:" + "b" * 64, "httpd:latest@sha256:" + "b" * 64, "httpd:1@sha256:" + "b" * 64,
])
def test_pull_policy_rule_is_the_api_servers(image):
    assert default_pull_policy(image) == default_image_pull_policy(image)


def test_without_hash_label_copies():
    t = tmpl({POD_TEMPLATE_HASH_LABEL: "h"})
    out = without_hash_label(t)
    assert out["metadata"]["labels"] == {"app": "web"}
    assert t["metadata"]["labels"][POD_TEMPLATE_HASH_LABEL] == "h"
    assert without_hash_label(None) == {}


@pytest.mark.parametrize("annotations, want", [({REVISION_ANNOTATION: "3"}, 3), ({}, None),
                                               ({REVISION_ANNOTATION: "x"}, None)])
def test_revision_of(annotations, want):
    assert revision_of({"metadata": {"annotations": annotations}}) == want


def rs(name, created, template):
    return {"metadata": {"name": name, "creationTimestamp": f"2024-05-01T10:00:0{created}Z"},
            "spec": {"template": template}}


def test_find_new_replicaset_is_the_oldest_equal_one():
    a = rs("web-a", 2, tmpl({POD_TEMPLATE_HASH_LABEL: "a"}))
    b = rs("web-b", 1, with_spec(tmpl({POD_TEMPLATE_HASH_LABEL: "b"}), restartPolicy="Always"))
    c = rs("web-c", 0, tmpl({POD_TEMPLATE_HASH_LABEL: "c"}, image="web:v0"))
    assert find_new_replicaset(tmpl(), [a, b, c]) is b
    assert find_new_replicaset(tmpl(), [a]) is a
    assert find_new_replicaset(tmpl(image="web:v9"), [a, b, c]) is None
