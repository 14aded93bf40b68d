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


def test_admit_enforce_warn_and_namespace_labels():
    from shoal.apiserver.podsecurity import admit
    from shoal.machinery.api import errors
    labels = {"strict": {"pod-security.kubernetes.io/enforce": "restricted"},
              "warned": {"pod-security.kubernetes.io/warn": "baseline"}}
    ns = labels.get
    priv = {"metadata": {"name": "p"}, "spec": pod(("app", {"securityContext": {"privileged": True}}))}
    with pytest.raises(errors.Forbidden, match=r'pods "p" is forbidden: violates PodSecurity "restricted:latest": '
                                               r'privileged \(container "app"'):
        admit("Pod", "strict", priv, None, namespace_labels=ns)
    ok = {"metadata": {"name": "p"}, "spec": pod(good())}
    assert admit("Pod", "strict", ok, None, namespace_labels=ns) == []
    # a workload is never refused, only warned about (enforce implies warn at that level)
    deploy = {"metadata": {"name": "d"}, "spec": {"template": {"spec": priv["spec"]}}}
    (w,) = admit("Deployment", "strict", deploy, None, namespace_labels=ns)
    assert w.startswith('would violate PodSecurity "restricted:latest": privileged')
    (w,) = admit("Pod", "warned", priv, None, namespace_labels=ns)
    assert w.startswith('would violate PodSecurity "baseline:latest"')
    assert admit("Pod", "other", priv, None, namespace_labels=ns) == []
    with pytest.raises(errors.Forbidden):
        admit("Pod", "other", priv, None, namespace_labels=ns, default_enforce="baseline")
    # an update that leaves the spec alone is not evaluated again
    assert admit("Pod", "strict", priv, priv, namespace_labels=ns) == []
    with pytest.raises(errors.Invalid, match=r"metadata.labels\[pod-security.kubernetes.io/enforce\]"):
        admit("Namespace", None, {"metadata": {"name": "x", "labels": {
            "pod-security.kubernetes.io/enforce": "strict"}}}, None, namespace_labels=ns)
