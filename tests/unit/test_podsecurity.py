"""Pod Security Standards checks (apiserver.podsecurity), table-tested per level."""
from __future__ import annotations

import pytest

from shoal.apiserver.podsecurity import Levels, check_labels, levels, message, violations

pytestmark = pytest.mark.unit

RESTRICTED_SC = {"allowPrivilegeEscalation": False, "runAsNonRoot": True, "capabilities": {"drop": ["ALL"]},
                 "seccompProfile": {"type": "RuntimeDefault"}}


def pod(*containers, **spec):
    return {"containers": [{"name": n, "image": "x", **c} for n, c in containers], **spec}


def good(**extra):
    return ("app", {"securityContext": dict(RESTRICTED_SC), **extra})


@pytest.mark.parametrize("spec, baseline, restricted", [
    (pod(("app", {})), [], ["allowPrivilegeEscalation != false", "runAsNonRoot != true", "seccompProfile",
                           "unrestricted capabilities"]),
    (pod(good()), [], []),
    (pod(("app", {"securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}}),
         securityContext={"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}), [], []),
    (pod(("app", {"securityContext": {"privileged": True}})), ["privileged"], None),
    (pod(("app", {"securityContext": {"capabilities": {"add": ["NET_ADMIN", "CHOWN"]}}})),
     ["non-default capabilities"], None),
    (pod(("app", {"securityContext": {"capabilities": {"add": ["CAP_KILL"]}}})), [], None),
    (pod(("app", {}), volumes=[{"name": "root", "hostPath": {"path": "/"}}]), ["hostPath volumes"], None),
    (pod(("app", {"ports": [{"containerPort": 80, "hostPort": 8080}]})), ["hostPort"], None),
    (pod(("app", {"ports": [{"containerPort": 80}]})), [], None),
    (pod(("app", {}), securityContext={"seccompProfile": {"type": "Unconfined"}}), ["seccompProfile"], None),
    (pod(good(), volumes=[{"name": "c", "emptyDir": {}}]), [], []),
    (pod(good(securityContext={**RESTRICTED_SC, "runAsUser": 0})), [], ["runAsUser=0"]),
    (pod(good(securityContext={**RESTRICTED_SC, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}})),
     [], []),
    (pod(good(securityContext={**RESTRICTED_SC, "capabilities": {"drop": ["ALL"], "add": ["SETUID"]}})),
     [], ["unrestricted capabilities"]),
    (pod(good(securityContext={**RESTRICTED_SC, "runAsNonRoot": False})), [], ["runAsNonRoot != true"]),
])
def test_levels(spec, baseline, restricted):
    def checks(level):
        return [v.split(" (")[0] for v in violations(level, spec)]
    assert violations("privileged", spec) == []
    assert checks("baseline") == baseline
    if restricted is not None:
        assert checks("restricted") == restricted
    else:
        assert set(baseline) <= set(checks("restricted"))


def test_messages_name_containers_and_fields():
    spec = pod(("a", {"securityContext": {"privileged": True}}), ("b", {}),
               volumes=[{"name": "host", "hostPath": {"path": "/etc"}}])
    text = message("baseline", violations("baseline", spec))
    assert text == ('violates PodSecurity "baseline:latest": privileged (container "a" must not set '
                    'securityContext.privileged=true), hostPath volumes (volume "host")')
    r = violations("restricted", pod(("a", {}), ("b", {})))
    assert 'allowPrivilegeEscalation != false (containers "a", "b" must set ' \
           'securityContext.allowPrivilegeEscalation=false)' in r


def test_labels():
    assert levels({}) == Levels()
    assert levels({}, "baseline") == Levels(enforce="baseline")
    assert levels({"pod-security.kubernetes.io/enforce": "restricted"}) == \
        Levels(enforce="restricted", warn="restricted")
    assert levels({"pod-security.kubernetes.io/warn": "baseline"}) == Levels(warn="baseline")
    assert levels({"pod-security.kubernetes.io/enforce": "bogus"}).enforce == "restricted"
    assert check_labels({"pod-security.kubernetes.io/enforce": "bogus", "pod-security.kubernetes.io/warn-version":
                         "v1.32", "pod-security.kubernetes.io/audit-version": "x", "other": "y"}) == [
        ("pod-security.kubernetes.io/enforce", 'must be one of "privileged", "baseline", "restricted", not \'bogus\''),
        ("pod-security.kubernetes.io/audit-version",
         'must be "latest" or a Kubernetes minor version like "v1.32", not \'x\'')]
