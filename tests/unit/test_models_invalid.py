"""shoal.machinery.api.models.validate: every rejection names its field path, reason and Kubernetes' message."""
import copy

import pytest

from shoal.machinery.api import errors
from shoal.machinery.api.models import validate

pytestmark = pytest.mark.unit

DEPLOY = {
    "apiVersion": "apps/v1", "kind": "Deployment",
    "metadata": {"name": "web", "namespace": "default"},
    "spec": {"selector": {"matchLabels": {"app": "web"}},
             "template": {"metadata": {"labels": {"app": "web"}},
                          "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27",
                                                   "ports": [{"containerPort": 80}]}]}}},
}
POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "default"},
       "spec": {"containers": [{"name": "app", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]}}


def _set(obj, path, value):
    """Set a dotted path (`spec.template.spec.containers.0.image`); value DELETE removes it."""
    parts = path.split(".")
    cur = obj
    for p in parts[:-1]:
        cur = cur[int(p)] if isinstance(cur, list) else cur.setdefault(p, {})
    last = parts[-1]
    if isinstance(cur, list):
        cur[int(last)] = value
    elif value is DELETE:
        cur.pop(last, None)
    else:
        cur[last] = value


DELETE = object()
C = "spec.template.spec.containers.0"  # container path (dotted, for _set)
CP = "spec.template.spec.containers[0]"  # container path (as reported)
PC = "spec.containers.0"
PCP = "spec.containers[0]"

# (id, kind, base, {dotted path: value}, field, reason, message fragment)
INVALID_CASES = [
    ("replicas-negative", "Deployment", DEPLOY, {"spec.replicas": -1}, "spec.replicas", "FieldValueInvalid",
     "Invalid value: -1: must be greater than or equal to 0"),
    ("name-missing", "Deployment", DEPLOY, {"metadata.name": DELETE}, "metadata.name", "FieldValueRequired",
     "Required value: name or generateName is required"),
    ("name-uppercase", "Deployment", DEPLOY, {"metadata.name": "Web"}, "metadata.name", "FieldValueInvalid",
     "a lowercase RFC 1123 subdomain must consist of"),
    ("name-too-long", "Deployment", DEPLOY, {"metadata.name": "a" * 254}, "metadata.name", "FieldValueInvalid",
     "must be no more than 253 characters"),
    ("namespace-bad", "Deployment", DEPLOY, {"metadata.namespace": "my.ns"}, "metadata.namespace",
     "FieldValueInvalid", "a lowercase RFC 1123 label must consist of"),
    ("generate-name-bad", "Pod", POD, {"metadata.name": DELETE, "metadata.generateName": "Web-"},
     "metadata.generateName", "FieldValueInvalid", "RFC 1123 subdomain"),
    ("label-key-bad", "Deployment", DEPLOY, {"metadata.labels": {"bad key": "x"}}, "metadata.labels",
     "FieldValueInvalid", 'Invalid value: "bad key": name part must consist of alphanumeric characters'),
    ("label-key-prefix-bad", "Deployment", DEPLOY, {"metadata.labels": {"Example.com/a": "x"}}, "metadata.labels",
     "FieldValueInvalid", "prefix part a lowercase RFC 1123 subdomain"),
    ("label-key-name-too-long", "Deployment", DEPLOY, {"metadata.labels": {"a" * 64: "x"}}, "metadata.labels",
     "FieldValueInvalid", "name part must be no more than 63 characters"),
    ("label-value-bad", "Deployment", DEPLOY, {"metadata.labels": {"a": "-x-"}}, "metadata.labels",
     "FieldValueInvalid", 'Invalid value: "-x-": a valid label must be an empty string'),
    ("label-value-too-long", "Deployment", DEPLOY, {"metadata.labels": {"a": "v" * 64}}, "metadata.labels",
     "FieldValueInvalid", "must be no more than 63 characters"),
    ("annotation-key-bad", "Deployment", DEPLOY, {"metadata.annotations": {"a/b/c": "x"}}, "metadata.annotations",
     "FieldValueInvalid", "a qualified name must consist of"),
    ("annotations-too-big", "Deployment", DEPLOY, {"metadata.annotations": {"big": "x" * (256 * 1024)}},
     "metadata.annotations", "FieldValueTooLong", "Too long: must have at most 262144 bytes"),
    ("owner-ref-uid-missing", "Deployment", DEPLOY,
     {"metadata.ownerReferences": [{"apiVersion": "v1", "kind": "X", "name": "x"}]},
     "metadata.ownerReferences[0].uid", "FieldValueInvalid", "uid must not be empty"),
    ("two-controllers", "Deployment", DEPLOY, {"metadata.ownerReferences": [
        {"apiVersion": "v1", "kind": "X", "name": "x", "uid": "1", "controller": True},
        {"apiVersion": "v1", "kind": "X", "name": "y", "uid": "2", "controller": True}]},
     "metadata.ownerReferences", "FieldValueInvalid", "Only one reference can have Controller set to true"),
    ("finalizer-unqualified", "Deployment", DEPLOY, {"metadata.finalizers": ["keep"]}, "metadata.finalizers[0]",
     "FieldValueInvalid", "name is neither a standard finalizer name nor is it fully qualified"),
    ("selector-missing", "Deployment", DEPLOY, {"spec.selector": DELETE}, "spec.selector", "FieldValueRequired",
     "Required value"),
    ("selector-empty", "Deployment", DEPLOY, {"spec.selector": {}}, "spec.selector", "FieldValueInvalid",
     "empty selector is invalid for deployment"),
    ("selector-mismatch", "Deployment", DEPLOY, {"spec.selector": {"matchLabels": {"app": "other"}}},
     "spec.template.metadata.labels", "FieldValueInvalid",
     'Invalid value: {"app":"web"}: `selector` does not match template `labels`'),
    ("selector-expr-mismatch", "Deployment", DEPLOY, {"spec.selector": {"matchExpressions": [
        {"key": "app", "operator": "NotIn", "values": ["web"]}]}},
     "spec.template.metadata.labels", "FieldValueInvalid", "`selector` does not match template `labels`"),
    ("selector-expr-operator", "Deployment", DEPLOY, {"spec.selector": {"matchExpressions": [
        {"key": "app", "operator": "Equals", "values": ["web"]}]}},
     "spec.selector.matchExpressions[0].operator", "FieldValueNotSupported",
     'Unsupported value: "Equals": supported values: "DoesNotExist", "Exists", "In", "NotIn"'),
    ("selector-expr-in-no-values", "Deployment", DEPLOY, {"spec.selector": {"matchExpressions": [
        {"key": "app", "operator": "In"}]}},
     "spec.selector.matchExpressions[0].values", "FieldValueRequired", "must be specified when `operator` is 'In'"),
    ("selector-expr-exists-values", "Deployment", DEPLOY, {"spec.selector": {"matchExpressions": [
        {"key": "app", "operator": "Exists", "values": ["x"]}]}},
     "spec.selector.matchExpressions[0].values", "FieldValueForbidden", "may not be specified when `operator`"),
    ("template-missing", "Deployment", DEPLOY, {"spec.template": DELETE}, "spec.template", "FieldValueRequired",
     "Required value"),
    ("template-restart-never", "Deployment", DEPLOY, {"spec.template.spec.restartPolicy": "Never"},
     "spec.template.spec.restartPolicy", "FieldValueNotSupported",
     'Unsupported value: "Never": supported values: "Always"'),
    ("both-zero", "Deployment", DEPLOY, {"spec.strategy": {"rollingUpdate": {"maxSurge": 0, "maxUnavailable": 0}}},
     "spec.strategy.rollingUpdate.maxUnavailable", "FieldValueInvalid",
     "Invalid value: 0: may not be 0 when `maxSurge` is 0"),
    ("both-zero-percent", "Deployment", DEPLOY,
     {"spec.strategy": {"rollingUpdate": {"maxSurge": "0%", "maxUnavailable": 0}}},
     "spec.strategy.rollingUpdate.maxUnavailable", "FieldValueInvalid", "may not be 0 when `maxSurge` is 0"),
    ("surge-not-percent", "Deployment", DEPLOY, {"spec.strategy": {"rollingUpdate": {"maxSurge": "ten"}}},
     "spec.strategy.rollingUpdate.maxSurge", "FieldValueInvalid", "a valid percent string must be a numeric string"),
    ("unavailable-over-100", "Deployment", DEPLOY, {"spec.strategy": {"rollingUpdate": {"maxUnavailable": "150%"}}},
     "spec.strategy.rollingUpdate.maxUnavailable", "FieldValueInvalid", "must not be greater than 100%"),
    ("surge-negative", "Deployment", DEPLOY, {"spec.strategy": {"rollingUpdate": {"maxSurge": -1}}},
     "spec.strategy.rollingUpdate.maxSurge", "FieldValueInvalid", "must be greater than or equal to 0"),
    ("recreate-with-rolling", "Deployment", DEPLOY,
     {"spec.strategy": {"type": "Recreate", "rollingUpdate": {"maxSurge": 1}}},
     "spec.strategy.rollingUpdate", "FieldValueForbidden", "may not be specified when strategy `type` is 'Recreate'"),
    ("strategy-type", "Deployment", DEPLOY, {"spec.strategy": {"type": "BlueGreen"}}, "spec.strategy.type",
     "FieldValueNotSupported", 'supported values: "Recreate", "RollingUpdate"'),
    ("history-negative", "Deployment", DEPLOY, {"spec.revisionHistoryLimit": -1}, "spec.revisionHistoryLimit",
     "FieldValueInvalid", "must be greater than or equal to 0"),
    ("deadline-not-above-minready", "Deployment", DEPLOY,
     {"spec.progressDeadlineSeconds": 10, "spec.minReadySeconds": 10},
     "spec.progressDeadlineSeconds", "FieldValueInvalid", "must be greater than minReadySeconds"),
    ("containers-missing", "Deployment", DEPLOY, {"spec.template.spec.containers": []},
     "spec.template.spec.containers", "FieldValueRequired", "Required value"),
    ("container-name-missing", "Deployment", DEPLOY, {f"{C}.name": DELETE}, f"{CP}.name", "FieldValueRequired",
     "Required value"),
    ("container-name-bad", "Deployment", DEPLOY, {f"{C}.name": "my_app"}, f"{CP}.name", "FieldValueInvalid",
     "RFC 1123 label"),
    ("container-name-dup", "Deployment", DEPLOY, {"spec.template.spec.containers": [
        {"name": "a", "image": "x:1"}, {"name": "a", "image": "y:1"}]},
     "spec.template.spec.containers[1].name", "FieldValueDuplicate", 'Duplicate value: "a"'),
    ("image-missing", "Deployment", DEPLOY, {f"{C}.image": DELETE}, f"{CP}.image", "FieldValueRequired",
     "Required value"),
    ("image-space", "Deployment", DEPLOY, {f"{C}.image": "nginx 1.27"}, f"{CP}.image", "FieldValueInvalid",
     "must not contain whitespace"),
    ("image-trailing-space", "Deployment", DEPLOY, {f"{C}.image": "nginx:1.27 "}, f"{CP}.image",
     "FieldValueInvalid", "must not have leading or trailing whitespace"),
    ("image-uppercase", "Deployment", DEPLOY, {f"{C}.image": "Nginx:1.27"}, f"{CP}.image", "FieldValueInvalid",
     "repository name must be lowercase"),
    ("image-short-digest", "Deployment", DEPLOY, {f"{C}.image": "nginx@sha256:abcd"}, f"{CP}.image",
     "FieldValueInvalid", "invalid reference format"),
    ("image-digest-length", "Deployment", DEPLOY, {f"{C}.image": "nginx@sha256:" + "a" * 63 + "aa"},
     f"{CP}.image", "FieldValueInvalid", "invalid checksum digest length"),
    ("image-bad-tag", "Deployment", DEPLOY, {f"{C}.image": "nginx:.1"}, f"{CP}.image", "FieldValueInvalid",
     "tag '.1'"),
    ("pull-policy", "Deployment", DEPLOY, {f"{C}.imagePullPolicy": "Sometimes"}, f"{CP}.imagePullPolicy",
     "FieldValueNotSupported", 'supported values: "Always", "IfNotPresent", "Never"'),
    ("port-zero", "Deployment", DEPLOY, {f"{C}.ports": [{"containerPort": 0}]}, f"{CP}.ports[0].containerPort",
     "FieldValueRequired", "Required value"),
    ("port-too-big", "Deployment", DEPLOY, {f"{C}.ports": [{"containerPort": 80}, {"containerPort": 70000}]},
     f"{CP}.ports[1].containerPort", "FieldValueInvalid",
     "Invalid value: 70000: must be between 1 and 65535, inclusive"),
    ("host-port-too-big", "Deployment", DEPLOY, {f"{C}.ports": [{"containerPort": 80, "hostPort": 65536}]},
     f"{CP}.ports[0].hostPort", "FieldValueInvalid", "must be between 1 and 65535, inclusive"),
    ("host-ip-bad", "Deployment", DEPLOY, {f"{C}.ports": [{"containerPort": 80, "hostIP": "1.2.3"}]},
     f"{CP}.ports[0].hostIP", "FieldValueInvalid", "must be a valid IP address"),
    ("protocol-bad", "Deployment", DEPLOY, {f"{C}.ports": [{"containerPort": 80, "protocol": "tcp"}]},
     f"{CP}.ports[0].protocol", "FieldValueNotSupported", 'supported values: "SCTP", "TCP", "UDP"'),
    ("port-name-too-long", "Deployment", DEPLOY, {f"{C}.ports": [{"containerPort": 80, "name": "a" * 16}]},
     f"{CP}.ports[0].name", "FieldValueInvalid", "must be no more than 15 characters"),
    ("port-name-no-letter", "Deployment", DEPLOY, {f"{C}.ports": [{"containerPort": 80, "name": "80"}]},
     f"{CP}.ports[0].name", "FieldValueInvalid", "must contain at least one letter"),
    ("port-name-dup", "Deployment", DEPLOY, {f"{C}.ports": [{"containerPort": 80, "name": "http"},
                                                           {"containerPort": 81, "name": "http"}]},
     f"{CP}.ports[1].name", "FieldValueDuplicate", 'Duplicate value: "http"'),
    ("host-port-dup", "Pod", POD, {"spec.containers": [
        {"name": "a", "image": "x:1", "ports": [{"containerPort": 80, "hostPort": 8080}]},
        {"name": "b", "image": "x:1", "ports": [{"containerPort": 81, "hostPort": 8080}]}]},
     "spec.containers[1].ports[0].hostPort", "FieldValueDuplicate", 'Duplicate value: "8080/TCP"'),
    ("env-name-bad", "Deployment", DEPLOY, {f"{C}.env": [{"name": "1BAD", "value": "x"}]}, f"{CP}.env[0].name",
     "FieldValueInvalid", "a valid environment variable name"),
    ("env-name-missing", "Deployment", DEPLOY, {f"{C}.env": [{"value": "x"}]}, f"{CP}.env[0].name",
     "FieldValueRequired", "Required value"),
    ("cpu-bad", "Deployment", DEPLOY, {f"{C}.resources": {"limits": {"cpu": "1 core"}}},
     f"{CP}.resources.limits[cpu]", "FieldValueInvalid",
     'Invalid value: "1 core": quantities must match the regular expression'),
    ("memory-negative", "Deployment", DEPLOY, {f"{C}.resources": {"requests": {"memory": "-1Mi"}}},
     f"{CP}.resources.requests[memory]", "FieldValueInvalid", "must be greater than or equal to 0"),
    ("memory-millibytes", "Deployment", DEPLOY, {f"{C}.resources": {"limits": {"memory": "128m"}}},
     f"{CP}.resources.limits[memory]", "FieldValueInvalid", "did you mean '128Mi'?"),
    ("resource-name-bad", "Deployment", DEPLOY, {f"{C}.resources": {"limits": {"mem": "1Gi"}}},
     f"{CP}.resources.limits[mem]", "FieldValueInvalid", "must be a standard resource type or fully qualified"),
    ("requests-over-limits", "Deployment", DEPLOY,
     {f"{C}.resources": {"limits": {"cpu": "500m"}, "requests": {"cpu": "1"}}},
     f"{CP}.resources.requests[cpu]", "FieldValueInvalid",
     'Invalid value: "1": must be less than or equal to cpu limit of 500m'),
    ("probe-no-handler", "Deployment", DEPLOY, {f"{C}.livenessProbe": {"periodSeconds": 5}}, f"{CP}.livenessProbe",
     "FieldValueRequired", "must specify a handler type"),
    ("probe-two-handlers", "Deployment", DEPLOY,
     {f"{C}.readinessProbe": {"httpGet": {"port": 80}, "tcpSocket": {"port": 80}}},
     f"{CP}.readinessProbe.tcpSocket", "FieldValueForbidden", "may not specify more than 1 handler type"),
    ("probe-period-negative", "Deployment", DEPLOY,
     {f"{C}.readinessProbe": {"tcpSocket": {"port": 80}, "periodSeconds": -1}},
     f"{CP}.readinessProbe.periodSeconds", "FieldValueInvalid", "must be greater than or equal to 0"),
    ("probe-port-range", "Deployment", DEPLOY, {f"{C}.livenessProbe": {"httpGet": {"port": 0}}},
     f"{CP}.livenessProbe.httpGet.port", "FieldValueInvalid", "must be between 1 and 65535, inclusive"),
    ("probe-port-missing", "Deployment", DEPLOY, {f"{C}.livenessProbe": {"tcpSocket": {}}},
     f"{CP}.livenessProbe.tcpSocket.port", "FieldValueRequired", "Required value"),
    ("probe-port-name-bad", "Deployment", DEPLOY, {f"{C}.livenessProbe": {"httpGet": {"port": "HTTP"}}},
     f"{CP}.livenessProbe.httpGet.port", "FieldValueInvalid", "must contain only alpha-numeric characters"),
    ("probe-scheme", "Deployment", DEPLOY, {f"{C}.livenessProbe": {"httpGet": {"port": 80, "scheme": "FTP"}}},
     f"{CP}.livenessProbe.httpGet.scheme", "FieldValueNotSupported", 'supported values: "HTTP", "HTTPS"'),
    ("probe-exec-empty", "Deployment", DEPLOY, {f"{C}.livenessProbe": {"exec": {"command": []}}},
     f"{CP}.livenessProbe.exec.command", "FieldValueRequired", "Required value"),
    ("liveness-success-threshold", "Deployment", DEPLOY,
     {f"{C}.livenessProbe": {"tcpSocket": {"port": 80}, "successThreshold": 2}},
     f"{CP}.livenessProbe.successThreshold", "FieldValueInvalid", "Invalid value: 2: must be 1"),
    ("readiness-grace", "Deployment", DEPLOY,
     {f"{C}.readinessProbe": {"tcpSocket": {"port": 80}, "terminationGracePeriodSeconds": 5}},
     f"{CP}.readinessProbe.terminationGracePeriodSeconds", "FieldValueInvalid",
     "must not be set for readinessProbes"),
    ("liveness-grace-zero", "Deployment", DEPLOY,
     {f"{C}.livenessProbe": {"tcpSocket": {"port": 80}, "terminationGracePeriodSeconds": 0}},
     f"{CP}.livenessProbe.terminationGracePeriodSeconds", "FieldValueInvalid", "must be greater than 0"),
    ("mount-unknown-volume", "Deployment", DEPLOY, {f"{C}.volumeMounts": [{"name": "data", "mountPath": "/d"}]},
     f"{CP}.volumeMounts[0].name", "FieldValueNotFound", 'Not found: "data"'),
    ("mount-path-missing", "Deployment", DEPLOY, {f"{C}.volumeMounts": [{"name": "v"}],
                                                  "spec.template.spec.volumes": [{"name": "v", "emptyDir": {}}]},
     f"{CP}.volumeMounts[0].mountPath", "FieldValueRequired", "Required value"),
    ("subpath-escape", "Deployment", DEPLOY,
     {f"{C}.volumeMounts": [{"name": "v", "mountPath": "/d", "subPath": "../etc"}],
      "spec.template.spec.volumes": [{"name": "v", "emptyDir": {}}]},
     f"{CP}.volumeMounts[0].subPath", "FieldValueInvalid", "must not contain '..'"),
    ("volume-two-sources", "Deployment", DEPLOY,
     {"spec.template.spec.volumes": [{"name": "v", "emptyDir": {}, "hostPath": {"path": "/x"}}]},
     "spec.template.spec.volumes[0].hostPath", "FieldValueForbidden", "may not specify more than 1 volume type"),
    ("volume-dup", "Deployment", DEPLOY,
     {"spec.template.spec.volumes": [{"name": "v", "emptyDir": {}}, {"name": "v", "emptyDir": {}}]},
     "spec.template.spec.volumes[1].name", "FieldValueDuplicate", 'Duplicate value: "v"'),
    ("hostpath-relative", "Deployment", DEPLOY,
     {"spec.template.spec.volumes": [{"name": "v", "hostPath": {"path": "var/x"}}]},
     "spec.template.spec.volumes[0].hostPath.path", "FieldValueInvalid", "must be an absolute path"),
    ("hostpath-type", "Deployment", DEPLOY,
     {"spec.template.spec.volumes": [{"name": "v", "hostPath": {"path": "/x", "type": "Dir"}}]},
     "spec.template.spec.volumes[0].hostPath.type", "FieldValueNotSupported", 'Unsupported value: "Dir"'),
    ("restart-policy", "Pod", POD, {"spec.restartPolicy": "Sometimes"}, "spec.restartPolicy",
     "FieldValueNotSupported", 'Unsupported value: "Sometimes": supported values: "Always", "Never", "OnFailure"'),
    ("grace-negative", "Pod", POD, {"spec.terminationGracePeriodSeconds": -1}, "spec.terminationGracePeriodSeconds",
     "FieldValueInvalid", "must be greater than or equal to 0"),
    ("dns-policy", "Pod", POD, {"spec.dnsPolicy": "Google"}, "spec.dnsPolicy", "FieldValueNotSupported",
     'Unsupported value: "Google"'),
    ("node-selector-bad", "Pod", POD, {"spec.nodeSelector": {"disk": "fast ssd"}}, "spec.nodeSelector",
     "FieldValueInvalid", "a valid label must be an empty string"),
    ("hostname-bad", "Pod", POD, {"spec.hostname": "Host_1"}, "spec.hostname", "FieldValueInvalid",
     "RFC 1123 label"),
    ("node-name-bad", "Pod", POD, {"spec.nodeName": "Node A"}, "spec.nodeName", "FieldValueInvalid",
     "RFC 1123 subdomain"),
    ("toleration-exists-value", "Pod", POD, {"spec.tolerations": [{"key": "a", "operator": "Exists", "value": "x"}]},
     "spec.tolerations[0].operator", "FieldValueInvalid", "value must be empty when `operator` is 'Exists'"),
    ("toleration-empty-key", "Pod", POD, {"spec.tolerations": [{"operator": "Equal", "value": "x"}]},
     "spec.tolerations[0].operator", "FieldValueInvalid", "operator must be Exists when `key` is empty"),
    ("toleration-seconds", "Pod", POD,
     {"spec.tolerations": [{"key": "a", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 5}]},
     "spec.tolerations[0].effect", "FieldValueInvalid", "effect must be 'NoExecute' when `tolerationSeconds` is set"),
    ("run-as-user-negative", "Pod", POD, {"spec.securityContext": {"runAsUser": -1}},
     "spec.securityContext.runAsUser", "FieldValueInvalid", "must be between 0 and 2147483647, inclusive"),
    ("privileged-no-escalation", "Pod", POD,
     {f"{PC}.securityContext": {"privileged": True, "allowPrivilegeEscalation": False}},
     f"{PCP}.securityContext", "FieldValueInvalid", "cannot set `allowPrivilegeEscalation` to false"),
    ("init-container-probe", "Pod", POD,
     {"spec.initContainers": [{"name": "i", "image": "x:1", "readinessProbe": {"tcpSocket": {"port": 1}}}]},
     "spec.initContainers[0].readinessProbe", "FieldValueForbidden", "may not be set for init containers"),
    ("init-container-name-dup", "Pod", POD, {"spec.initContainers": [{"name": "app", "image": "x:1"}]},
     "spec.containers[0].name", "FieldValueDuplicate", 'Duplicate value: "app"'),
    ("pod-phase", "Pod", POD, {"status": {"phase": "Exploded"}}, "status.phase", "FieldValueNotSupported",
     'Unsupported value: "Exploded"'),
    ("pod-ip", "Pod", POD, {"status": {"podIP": "10.0.0"}}, "status.podIP", "FieldValueInvalid",
     "must be a valid IP address"),
    ("restart-count", "Pod", POD, {"status": {"containerStatuses": [{"name": "app", "restartCount": -1}]}},
     "status.containerStatuses[0].restartCount", "FieldValueInvalid", "must be greater than or equal to 0"),
    ("deploy-status-ready-gt-replicas", "Deployment", DEPLOY, {"status": {"replicas": 1, "readyReplicas": 2,
                                                                          "availableReplicas": 0}},
     "status.readyReplicas", "FieldValueInvalid", "cannot be greater than status.replicas"),
]


@pytest.mark.parametrize("case", INVALID_CASES, ids=[c[0] for c in INVALID_CASES])
def test_invalid(case):
    _, kind, base, changes, field, reason, fragment = case
    obj = copy.deepcopy(base)
    for path, value in changes.items():
        _set(obj, path, value)
    with pytest.raises(errors.Invalid) as e:
        validate(kind, obj)
    err = e.value
    matching = [c for c in err.causes if c.field == field]
    assert matching, f"no cause for {field}; causes: {[(c.field, c.message) for c in err.causes]}"
    assert any(c.reason == reason and fragment in c.message for c in matching), \
        [(c.reason, c.message) for c in matching]
    assert err.code == 422 and err.reason == "Invalid"
    status = err.status()
    assert status["details"]["kind"] == kind
    assert any(c["field"] == field for c in status["details"]["causes"])


def test_message_reads_like_kubernetes():
    d = copy.deepcopy(DEPLOY)
    d["spec"]["replicas"] = -1
    with pytest.raises(errors.Invalid) as e:
        validate("Deployment", d)
    assert e.value.message == ('Deployment.apps "web" is invalid: spec.replicas: Invalid value: -1: '
                               'must be greater than or equal to 0')
    assert e.value.status()["details"] == {
        "name": "web", "kind": "Deployment", "group": "apps",
        "causes": [{"reason": "FieldValueInvalid", "message": "Invalid value: -1: must be greater than or equal to 0",
                    "field": "spec.replicas"}]}


def test_all_problems_reported_at_once():
    d = copy.deepcopy(DEPLOY)
    d["spec"]["replicas"] = -1
    d["spec"]["template"]["spec"]["containers"][0]["image"] = "Bad Image"
    d["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = 99999
    with pytest.raises(errors.Invalid) as e:
        validate("Deployment", d)
    fields = {c.field for c in e.value.causes}
    assert fields == {"spec.replicas", "spec.template.spec.containers[0].image",
                      "spec.template.spec.containers[0].ports[0].containerPort"}
    assert e.value.message.startswith('Deployment.apps "web" is invalid: [')


def test_other_kinds_qualified_names():
    with pytest.raises(errors.Invalid, match=r'^Pod "web-1" is invalid: spec.restartPolicy'):
        validate("Pod", {**copy.deepcopy(POD), "spec": {**POD["spec"], "restartPolicy": "x"}})
    with pytest.raises(errors.Invalid, match=r'^Lease.coordination.k8s.io "l" is invalid: spec.leaseDurationSeconds: '
                                             r'Invalid value: 0: must be greater than 0'):
        validate("Lease", {"metadata": {"name": "l", "namespace": "n"}, "spec": {"leaseDurationSeconds": 0}})


# (id, kind, object, field, reason, fragment) for kinds without a big base manifest
OTHER_CASES = [
    ("namespace-dotted", "Namespace", {"metadata": {"name": "team.a"}}, "metadata.name", "FieldValueInvalid",
     "RFC 1123 label"),
    ("namespace-on-node", "Node", {"metadata": {"name": "n1", "namespace": "default"}}, "metadata.namespace",
     "FieldValueForbidden", "not allowed on this type"),
    ("namespace-phase", "Namespace", {"metadata": {"name": "a"}, "status": {"phase": "Gone"}}, "status.phase",
     "FieldValueNotSupported", 'supported values: "Active", "Terminating"'),
    ("node-cidr", "Node", {"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.1.0"}}, "spec.podCIDR",
     "FieldValueInvalid", "must be a valid CIDR value"),
    ("node-cidrs-mismatch", "Node", {"metadata": {"name": "n1"}, "spec": {"podCIDR": "10.244.1.0/24",
                                                                         "podCIDRs": ["10.244.2.0/24"]}},
     "spec.podCIDRs[0]", "FieldValueInvalid", "must match spec.podCIDR"),
    ("taint-effect", "Node", {"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "a", "effect": "Maybe"}]}},
     "spec.taints[0].effect", "FieldValueNotSupported", '"NoExecute", "NoSchedule", "PreferNoSchedule"'),
    ("taint-key-missing", "Node", {"metadata": {"name": "n1"}, "spec": {"taints": [{"effect": "NoSchedule"}]}},
     "spec.taints[0].key", "FieldValueRequired", "Required value"),
    ("node-capacity", "Node", {"metadata": {"name": "n1"}, "status": {"capacity": {"cpu": "two"}}},
     "status.capacity[cpu]", "FieldValueInvalid", "quantities must match"),
    ("node-address-type", "Node", {"metadata": {"name": "n1"}, "status": {"addresses": [
        {"type": "PodIP", "address": "1.2.3.4"}]}}, "status.addresses[0].type", "FieldValueNotSupported",
     'Unsupported value: "PodIP"'),
    ("node-condition-status", "Node", {"metadata": {"name": "n1"}, "status": {"conditions": [
        {"type": "Ready", "status": "Yes"}]}}, "status.conditions[0].status", "FieldValueNotSupported",
     '"False", "True", "Unknown"'),
    ("event-type", "Event", {"metadata": {"name": "e", "namespace": "default"}, "involvedObject": {"kind": "Pod"},
                             "type": "Info"}, "type", "FieldValueNotSupported", '"Normal", "Warning"'),
    ("event-ns-mismatch", "Event", {"metadata": {"name": "e", "namespace": "default"},
                                    "involvedObject": {"kind": "Pod", "namespace": "other"}},
     "involvedObject.namespace", "FieldValueInvalid", "does not match event.namespace"),
    ("event-no-object", "Event", {"metadata": {"name": "e", "namespace": "default"}}, "involvedObject",
     "FieldValueRequired", "Required value"),
    ("lease-transitions", "Lease", {"metadata": {"name": "l", "namespace": "n"}, "spec": {"leaseTransitions": -1}},
     "spec.leaseTransitions", "FieldValueInvalid", "must be greater than or equal to 0"),
    ("rs-replicas", "ReplicaSet", {**copy.deepcopy(DEPLOY), "kind": "ReplicaSet",
                                   "spec": {**copy.deepcopy(DEPLOY["spec"]), "replicas": -2}},
     "spec.replicas", "FieldValueInvalid", "must be greater than or equal to 0"),
    ("rs-selector-empty", "ReplicaSet", {**copy.deepcopy(DEPLOY), "kind": "ReplicaSet",
                                         "spec": {**copy.deepcopy(DEPLOY["spec"]), "selector": {}}},
     "spec.selector", "FieldValueInvalid", "empty selector is invalid for replicaset"),
    ("delete-propagation", "DeleteOptions", {"propagationPolicy": "Sideways"}, "propagationPolicy",
     "FieldValueNotSupported", '"Background", "Foreground", "Orphan"'),
    ("delete-grace-negative", "DeleteOptions", {"gracePeriodSeconds": -5}, "gracePeriodSeconds",
     "FieldValueInvalid", "must be greater than or equal to 0"),
    ("scale-negative", "Scale", {"metadata": {"name": "web", "namespace": "d"}, "spec": {"replicas": -1}},
     "spec.replicas", "FieldValueInvalid", "must be greater than or equal to 0"),
]


@pytest.mark.parametrize("case", OTHER_CASES, ids=[c[0] for c in OTHER_CASES])
def test_invalid_other_kinds(case):
    _, kind, obj, field, reason, fragment = case
    with pytest.raises(errors.Invalid) as e:
        validate(kind, obj)
    matching = [c for c in e.value.causes if c.field == field]
    assert matching, [(c.field, c.message) for c in e.value.causes]
    assert any(c.reason == reason and fragment in c.message for c in matching), \
        [(c.reason, c.message) for c in matching]


# --- decoding errors: BadRequest ----------------------------------------------------------

BAD_REQUEST_CASES = [
    ("unknown-spec-field", "Deployment", {"spec.foo": 1}, ['unknown field "spec.foo"'],
     'strict decoding error: unknown field "spec.foo"'),
    ("unknown-container-field", "Deployment", {f"{C}.imagee": "x"},
     [f'unknown field "{CP}.imagee"'], f'strict decoding error: unknown field "{CP}.imagee"'),
    ("unknown-port-field", "Deployment", {f"{C}.ports": [{"containerPort": 80, "targetPort": 80}]},
     [f'unknown field "{CP}.ports[0].targetPort"'], "strict decoding error"),
    ("two-unknown", "Deployment", {"spec.foo": 1, "metadata.bar": 2},
     ['unknown field "spec.foo"', 'unknown field "metadata.bar"'], 'unknown field "metadata.bar"'),
    ("replicas-string", "Deployment", {"spec.replicas": "3"}, ['expected an integer, got string "3"'],
     'Deployment in version "v1" cannot be handled as a Deployment: spec.replicas: expected an integer'),
    ("replicas-bool", "Deployment", {"spec.replicas": True}, ["expected an integer, got boolean true"],
     "cannot be handled as a Deployment"),
    ("label-number", "Deployment", {"metadata.labels": {"version": 1}}, ["expected a string, got number 1"],
     "metadata.labels[version]: expected a string"),
    ("containers-object", "Deployment", {"spec.template.spec.containers": {"name": "x"}},
     ["expected a list"], "spec.template.spec.containers: expected a list"),
    ("surge-float", "Deployment", {"spec.strategy": {"rollingUpdate": {"maxSurge": 1.5}}},
     ["expected an integer or a string, got number 1.5"], "spec.strategy.rollingUpdate.maxSurge"),
    ("bad-timestamp", "Deployment", {"metadata.creationTimestamp": "yesterday"},
     ["invalid timestamp 'yesterday'"], "metadata.creationTimestamp"),
    ("naive-timestamp", "Deployment", {"metadata.creationTimestamp": "2024-05-01T12:00:00"},
     ["a time zone is required"], "metadata.creationTimestamp"),
]


@pytest.mark.parametrize("case", BAD_REQUEST_CASES, ids=[c[0] for c in BAD_REQUEST_CASES])
def test_bad_request(case):
    _, kind, changes, cause_fragments, message_fragment = case
    obj = copy.deepcopy(DEPLOY)
    for path, value in changes.items():
        _set(obj, path, value)
    with pytest.raises(errors.BadRequest) as e:
        validate(kind, obj)
    assert e.value.code == 400
    assert message_fragment in e.value.message
    for frag in cause_fragments:
        assert any(frag in c.message for c in e.value.causes), [(c.field, c.message) for c in e.value.causes]


def test_unknown_field_cause_shape():
    d = copy.deepcopy(DEPLOY)
    d["spec"]["foo"] = 1
    with pytest.raises(errors.BadRequest) as e:
        validate("Deployment", d)
    assert [c.to_dict() for c in e.value.causes] == [
        {"reason": "FieldValueInvalid", "message": 'unknown field "spec.foo"', "field": "spec.foo"}]


@pytest.mark.parametrize("obj,fragment", [
    ({**DEPLOY, "apiVersion": "apps/v1beta1"}, "the API version in the data (apps/v1beta1) does not match"),
    ({**DEPLOY, "kind": "StatefulSet"}, "the kind in the data (StatefulSet) does not match the expected kind"),
    ([1, 2], "body must be a JSON object"),
])
def test_type_meta_errors(obj, fragment):
    with pytest.raises(errors.BadRequest, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        validate("Deployment", obj)


def test_unknown_kind_and_subresource():
    with pytest.raises(errors.BadRequest, match='no kind "ReplicationController"'):
        validate("ReplicationController", {})
    with pytest.raises(errors.BadRequest, match="unknown subresource 'exec'"):
        validate("Pod", POD, subresource="exec")


# -- /status writes: the stand-alone status check answers as the whole-object one does --------------
RS = {"apiVersion": "apps/v1", "kind": "ReplicaSet", "metadata": {"name": "web-1", "namespace": "default"},
      "spec": copy.deepcopy(DEPLOY["spec"])}
_T = "2026-01-02T03:04:05Z"


@pytest.mark.parametrize("kind,stored,status", [
    ("Pod", POD, {}),
    ("Pod", POD, {"phase": "Running", "podIP": "10.1.0.5", "podIPs": [{"ip": "10.1.0.5"}], "hostIP": "127.0.0.1",
                  "startTime": "2026-01-02T03:04:05+00:00",
                  "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": _T}],
                  "containerStatuses": [{"name": "app", "ready": True, "restartCount": 2, "image": "nginx:1.27",
                                         "imageID": "nginx@sha256:" + "a" * 64,
                                         "state": {"running": {"startedAt": _T}},
                                         "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled"}}}]}),
    ("Pod", POD, {"phase": "Exploded"}),
    ("Pod", POD, {"podIP": "10.0.0", "podIPs": [{"ip": "10.0.0.9"}]}),
    ("Pod", POD, {"containerStatuses": [{"restartCount": -1}]}),
    ("Pod", POD, {"phase": 3, "bogus": True}),
    ("Pod", POD, {"containerStatuses": [{"name": "app", "state": {"running": {"startedAt": "yesterday"}}}]}),
    ("Pod", POD, {"conditions": [{"type": "Ready", "status": "Maybe"}]}),
    ("Pod", POD, ["not", "an", "object"]),
    ("ReplicaSet", RS, {"replicas": 3, "readyReplicas": 2, "availableReplicas": 2, "observedGeneration": 1}),
    ("ReplicaSet", RS, {"replicas": 1, "readyReplicas": 2}),
    ("ReplicaSet", RS, {"replicas": -1, "fullyLabeledReplicas": "2"}),
    ("Deployment", DEPLOY, {"replicas": 2, "updatedReplicas": 2, "availableReplicas": 1, "readyReplicas": 1,
                            "conditions": [{"type": "Available", "status": "True", "lastUpdateTime": _T}]}),
    ("Deployment", DEPLOY, {"availableReplicas": 3, "readyReplicas": 1, "replicas": 3, "collisionCount": -2}),
    ("Deployment", DEPLOY, {"unknownField": 1}),
])
def test_status_alone_validates_like_the_whole_object(kind, stored, status):
    from shoal.machinery.api.models import validate_status
    cur = validate(kind, copy.deepcopy(stored))

    def outcome(fn):
        try:
            return "ok", fn()
        except errors.ApiError as e:
            return type(e).__name__, e.status()
    whole = outcome(lambda: validate(kind, dict(cur, status=copy.deepcopy(status)), old=cur,
                                     subresource="status").get("status", {}))
    alone = outcome(lambda: validate_status(kind, copy.deepcopy(status), name=stored["metadata"]["name"]))
    assert alone == whole


def test_status_alone_leaves_node_and_namespace_to_the_whole_object():
    from shoal.machinery.api.models import validate_status
    assert validate_status("Node", {"capacity": {"cpu": "2"}}, name="n1") is None
    assert validate_status("Namespace", {"phase": "Active"}, name="a") is None
