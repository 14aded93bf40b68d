"""shoal.machinery.api.models.validate: valid manifests pass and come back defaulted and normalized."""
import copy
import datetime

import pytest

from shoal.machinery.api.models import validate

pytestmark = pytest.mark.unit


def deployment(**spec_overrides):
    d = {
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "default", "labels": {"app": "web"}},
        "spec": {
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "nginx", "image": "nginx:1.27", "ports": [{"containerPort": 80}]}]},
            },
        },
    }
    d["spec"].update(spec_overrides)
    return d


def pod(**spec_overrides):
    p = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "web-1", "namespace": "default"},
         "spec": {"containers": [{"name": "app", "image": "registry.local:5000/team/app:v2"}]}}
    p["spec"].update(spec_overrides)
    return p


def test_deployment_defaults():
    out = validate("Deployment", deployment())
    spec = out["spec"]
    assert out["apiVersion"] == "apps/v1" and out["kind"] == "Deployment"
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"}}
    assert spec["revisionHistoryLimit"] == 10
    assert spec["progressDeadlineSeconds"] == 600
    assert "minReadySeconds" not in spec
    ps = spec["template"]["spec"]
    assert ps["restartPolicy"] == "Always"
    assert ps["terminationGracePeriodSeconds"] == 30
    assert ps["dnsPolicy"] == "ClusterFirst"
    assert ps["schedulerName"] == "default-scheduler"
    assert ps["securityContext"] == {}
    c = ps["containers"][0]
    assert c["imagePullPolicy"] == "IfNotPresent"
    assert c["terminationMessagePath"] == "/dev/termination-log"
    assert c["terminationMessagePolicy"] == "File"
    assert c["ports"] == [{"containerPort": 80, "protocol": "TCP"}]
    assert c["resources"] == {}


def test_validate_does_not_modify_input_and_is_idempotent():
    d = deployment()
    before = copy.deepcopy(d)
    out = validate("Deployment", d)
    assert d == before
    assert validate("Deployment", out) == out


def test_apiversion_and_kind_filled_in():
    d = deployment()
    del d["apiVersion"], d["kind"]
    out = validate("Deployment", d)
    assert (out["apiVersion"], out["kind"]) == ("apps/v1", "Deployment")


@pytest.mark.parametrize("strategy,expected", [
    ({"type": "Recreate"}, {"type": "Recreate"}),
    ({"rollingUpdate": {"maxSurge": 1}}, {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": "25%"}}),
    ({"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0}},
     {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 0, "maxUnavailable": "25%"}}),
    ({"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "0%", "maxSurge": "100%"}},
     {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": "0%", "maxSurge": "100%"}}),
])
def test_strategy_defaults(strategy, expected):
    assert validate("Deployment", deployment(strategy=strategy))["spec"]["strategy"] == expected


@pytest.mark.parametrize("image,policy", [
    ("nginx", "Always"),
    ("nginx:latest", "Always"),
    ("nginx:1.27", "IfNotPresent"),
    ("localhost:5000/app", "Always"),
    ("localhost:5000/app:v1", "IfNotPresent"),
    ("nginx@sha256:" + "a" * 64, "IfNotPresent"),
    ("nginx:1.27@sha256:" + "b" * 64, "IfNotPresent"),
    ("127.0.0.1:5000/team/app:v1", "IfNotPresent"),
    ("docker.io/library/busybox:1.36", "IfNotPresent"),
])
def test_image_pull_policy_default(image, policy):
    out = validate("Pod", pod(containers=[{"name": "c", "image": image}]))
    assert out["spec"]["containers"][0]["imagePullPolicy"] == policy


def test_explicit_pull_policy_kept():
    out = validate("Pod", pod(containers=[{"name": "c", "image": "nginx", "imagePullPolicy": "Never"}]))
    assert out["spec"]["containers"][0]["imagePullPolicy"] == "Never"


def test_probe_defaults():
    c = {"name": "c", "image": "nginx:1", "livenessProbe": {"httpGet": {"port": 80}},
         "readinessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 0},
         "startupProbe": {"exec": {"command": ["true"]}, "failureThreshold": 30},
         "ports": [{"name": "http", "containerPort": 80}]}
    out = validate("Pod", pod(containers=[c]))["spec"]["containers"][0]
    assert out["livenessProbe"] == {"httpGet": {"path": "/", "port": 80, "scheme": "HTTP"}, "timeoutSeconds": 1,
                                    "periodSeconds": 10, "successThreshold": 1, "failureThreshold": 3}
    assert out["readinessProbe"]["periodSeconds"] == 10  # 0 means default, as in Kubernetes
    assert out["readinessProbe"]["tcpSocket"] == {"port": "http"}
    assert out["startupProbe"]["failureThreshold"] == 30


def test_requests_default_to_limits_for_pods_only():
    c = {"name": "c", "image": "nginx:1", "resources": {"limits": {"cpu": "500m", "memory": "128Mi"},
                                                       "requests": {"cpu": "100m"}}}
    out = validate("Pod", pod(containers=[c]))["spec"]["containers"][0]
    assert out["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi"}
    d = deployment()
    d["spec"]["template"]["spec"]["containers"] = [copy.deepcopy(c)]
    tmpl_c = validate("Deployment", d)["spec"]["template"]["spec"]["containers"][0]
    assert tmpl_c["resources"]["requests"] == {"cpu": "100m"}


def test_numeric_quantities_become_strings():
    c = {"name": "c", "image": "nginx:1", "resources": {"limits": {"cpu": 1, "memory": 1073741824},
                                                       "requests": {"cpu": 0.5}}}
    out = validate("Pod", pod(containers=[c]))["spec"]["containers"][0]["resources"]
    assert out == {"limits": {"cpu": "1", "memory": "1073741824"}, "requests": {"cpu": "0.5", "memory": "1073741824"}}


def test_full_pod_spec_accepted():
    spec = {
        "initContainers": [{"name": "init", "image": "busybox:1.36", "command": ["sh", "-c", "true"]}],
        "containers": [{
            "name": "app", "image": "busybox:1.36", "command": ["httpd"], "args": ["-f", "-p", "8080"],
            "workingDir": "/srv", "env": [{"name": "MODE", "value": "prod"}, {"name": "EMPTY"}],
            "ports": [{"name": "http", "containerPort": 8080, "hostPort": 18080, "hostIP": "127.0.0.1",
                       "protocol": "TCP"}],
            "resources": {"limits": {"cpu": "1", "memory": "64Mi"}, "requests": {"cpu": "100m", "memory": "32Mi"}},
            "volumeMounts": [{"name": "data", "mountPath": "/data"}, {"name": "host", "mountPath": "/h",
                                                                      "readOnly": True, "subPath": "sub/dir"}],
            "livenessProbe": {"httpGet": {"path": "/healthz", "port": "http", "httpHeaders": [
                {"name": "X-Probe", "value": "1"}]}, "initialDelaySeconds": 5, "terminationGracePeriodSeconds": 5},
            "readinessProbe": {"tcpSocket": {"port": 8080}, "successThreshold": 2},
            "securityContext": {"runAsUser": 1000, "runAsNonRoot": True, "readOnlyRootFilesystem": True,
                                "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
            "terminationMessagePolicy": "FallbackToLogsOnError",
        }],
        "volumes": [{"name": "data", "emptyDir": {"sizeLimit": "1Gi"}},
                    {"name": "host", "hostPath": {"path": "/var/lib/x", "type": "DirectoryOrCreate"}},
                    {"name": "scratch"}],
        "restartPolicy": "OnFailure", "terminationGracePeriodSeconds": 10, "activeDeadlineSeconds": 600,
        "nodeName": "node-a", "nodeSelector": {"kubernetes.io/os": "linux"}, "hostname": "app",
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "web", "effect": "NoSchedule"},
                        {"operator": "Exists"},
                        {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute",
                         "tolerationSeconds": 30}],
        "securityContext": {"runAsUser": 1000, "fsGroup": 2000, "supplementalGroups": [3000]},
        "schedulerName": "default-scheduler", "dnsPolicy": "Default",
    }
    out = validate("Pod", pod(**spec))
    assert out["spec"]["volumes"][2] == {"name": "scratch", "emptyDir": {}}  # no source -> emptyDir
    assert out["spec"]["restartPolicy"] == "OnFailure"
    assert out["spec"]["initContainers"][0]["imagePullPolicy"] == "IfNotPresent"
    assert out["spec"]["containers"][0]["env"][1] == {"name": "EMPTY"}


def test_pod_status_accepted():
    p = pod(nodeName="n1")
    p["status"] = {
        "phase": "Running", "hostIP": "10.0.0.2", "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}],
        "startTime": "2024-05-01T12:00:00Z",
        "conditions": [{"type": "Ready", "status": "True", "lastTransitionTime": "2024-05-01T12:00:05Z"}],
        "containerStatuses": [{
            "name": "app", "ready": True, "started": True, "restartCount": 1, "image": "nginx:1.27",
            "imageID": "nginx@sha256:" + "c" * 64, "containerID": "runc://abc",
            "state": {"running": {"startedAt": "2024-05-01T12:00:04Z"}},
            "lastState": {"terminated": {"exitCode": 137, "reason": "OOMKilled", "signal": 9,
                                         "startedAt": "2024-05-01T11:00:00Z", "finishedAt": "2024-05-01T12:00:00Z",
                                         "containerID": "runc://old"}},
        }],
        "reason": "", "message": "",
    }
    out = validate("Pod", p, subresource="status")
    assert out["status"]["containerStatuses"][0]["lastState"]["terminated"]["exitCode"] == 137
    assert out["status"]["podIPs"] == [{"ip": "10.244.1.5"}]


def test_python_client_shape_accepted():
    """What the official `kubernetes` client sends: +00:00 timestamps, nulls, `resources: {}`."""
    kclient = pytest.importorskip("kubernetes.client")
    d = kclient.V1Deployment(
        api_version="apps/v1", kind="Deployment",
        metadata=kclient.V1ObjectMeta(name="web", creation_timestamp=datetime.datetime(
            2024, 5, 1, 12, 0, 0, tzinfo=datetime.timezone.utc)),
        spec=kclient.V1DeploymentSpec(
            replicas=2, selector=kclient.V1LabelSelector(match_labels={"app": "web"}),
            template=kclient.V1PodTemplateSpec(
                metadata=kclient.V1ObjectMeta(labels={"app": "web"}),
                spec=kclient.V1PodSpec(containers=[kclient.V1Container(
                    name="web", image="nginx:1.27", resources=kclient.V1ResourceRequirements())]))))
    body = kclient.ApiClient().sanitize_for_serialization(d)
    out = validate("Deployment", body)
    assert out["metadata"]["creationTimestamp"] == "2024-05-01T12:00:00Z"
    assert out["spec"]["replicas"] == 2
    assert out["spec"]["template"]["spec"]["containers"][0]["resources"] == {}


def test_kubectl_shape_with_nulls_and_server_fields():
    """What kubectl sends back on update / rollout undo: nulls, server-set metadata, managedFields."""
    d = deployment()
    d["metadata"].update({
        "uid": "6b1c", "resourceVersion": "1016", "generation": 2, "creationTimestamp": "2024-05-01T12:00:00.000+00:00",
        "selfLink": "", "managedFields": [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {}},
                                           "time": None}],
        "annotations": {"deployment.kubernetes.io/revision": "2",
                        "kubectl.kubernetes.io/last-applied-configuration": '{"x":1}\n'},
        "ownerReferences": None, "finalizers": ["example.com/keep"], "deletionTimestamp": None,
    })
    d["spec"]["template"]["metadata"]["creationTimestamp"] = None
    d["spec"]["template"]["spec"]["containers"][0]["resources"] = {}
    d["spec"]["paused"] = None
    d["status"] = {"observedGeneration": 2, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2,
                   "availableReplicas": 2, "conditions": [
                       {"type": "Available", "status": "True", "reason": "MinimumReplicasAvailable",
                        "lastUpdateTime": "2024-05-01T12:00:00Z", "lastTransitionTime": "2024-05-01T12:00:00Z"}]}
    out = validate("Deployment", d)
    meta = out["metadata"]
    assert meta["creationTimestamp"] == "2024-05-01T12:00:00Z"
    assert meta["managedFields"] == [{"manager": "kubectl", "operation": "Update", "fieldsV1": {"f:spec": {}},
                                      "time": None}]  # opaque: kept as sent
    assert "deletionTimestamp" not in meta and "ownerReferences" not in meta
    assert "creationTimestamp" not in out["spec"]["template"]["metadata"]
    assert "paused" not in out["spec"]
    assert out["status"]["readyReplicas"] == 2


@pytest.mark.parametrize("ts,normalized", [
    ("2024-05-01T12:00:00Z", "2024-05-01T12:00:00Z"),
    ("2024-05-01T12:00:00+00:00", "2024-05-01T12:00:00Z"),
    ("2024-05-01T14:00:00+02:00", "2024-05-01T12:00:00Z"),
    ("2024-05-01T12:00:00.123456Z", "2024-05-01T12:00:00Z"),
])
def test_time_normalization(ts, normalized):
    d = deployment()
    d["metadata"]["creationTimestamp"] = ts
    assert validate("Deployment", d)["metadata"]["creationTimestamp"] == normalized


def test_micro_time_keeps_microseconds():
    lease = {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
             "metadata": {"name": "node-a", "namespace": "kube-node-lease"},
             "spec": {"holderIdentity": "node-a", "leaseDurationSeconds": 40,
                      "renewTime": "2024-05-01T12:00:00.123456+00:00", "acquireTime": "2024-05-01T12:00:00Z",
                      "leaseTransitions": 0}}
    out = validate("Lease", lease)
    assert out["spec"]["renewTime"] == "2024-05-01T12:00:00.123456Z"
    assert out["spec"]["acquireTime"] == "2024-05-01T12:00:00.000000Z"


def test_replicaset_defaults():
    rs = deployment()
    rs["kind"] = "ReplicaSet"
    rs["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                          "uid": "u1", "controller": True, "blockOwnerDeletion": True}]
    out = validate("ReplicaSet", rs)
    assert out["spec"]["replicas"] == 1
    assert "strategy" not in out["spec"]
    assert out["spec"]["template"]["spec"]["restartPolicy"] == "Always"


def test_namespace_defaults():
    out = validate("Namespace", {"metadata": {"name": "team-a"}})
    assert out == {"apiVersion": "v1", "kind": "Namespace",
                   "metadata": {"name": "team-a", "labels": {"kubernetes.io/metadata.name": "team-a"}},
                   "status": {"phase": "Active"}}


def test_node_accepted_and_allocatable_defaults_to_capacity():
    node = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "node-a", "labels": {"kubernetes.io/hostname": "node-a"},
                                                             "annotations": {"shoal.dev/vtep-mac": "aa:bb:cc:dd:ee:ff"}},
            "spec": {"podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"], "unschedulable": False,
                     "taints": [{"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}]},
            "status": {"capacity": {"cpu": "2", "memory": "4025800Ki", "pods": "110"},
                       "conditions": [{"type": "Ready", "status": "True", "reason": "KubeletReady",
                                       "lastHeartbeatTime": "2024-05-01T12:00:00Z"}],
                       "addresses": [{"type": "InternalIP", "address": "10.0.0.2"},
                                     {"type": "Hostname", "address": "node-a"}],
                       "nodeInfo": {"machineID": "m", "systemUUID": "s", "bootID": "b", "kernelVersion": "6.1",
                                    "osImage": "Debian 12", "containerRuntimeVersion": "runc://1.1",
                                    "kubeletVersion": "shoal/0.1", "kubeProxyVersion": "", "operatingSystem": "linux",
                                    "architecture": "amd64"},
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}}}}
    out = validate("Node", node)
    assert out["status"]["allocatable"] == {"cpu": "2", "memory": "4025800Ki", "pods": "110"}
    assert out["status"]["daemonEndpoints"] == {"kubeletEndpoint": {"Port": 10250}}
    assert out["status"]["nodeInfo"]["machineID"] == "m"


def test_event_accepted():
    ev = {"apiVersion": "v1", "kind": "Event",
          "metadata": {"name": "web.17a8b3c", "namespace": "default"},
          "involvedObject": {"kind": "Deployment", "namespace": "default", "name": "web", "uid": "u1",
                             "apiVersion": "apps/v1", "resourceVersion": "12"},
          "reason": "ScalingReplicaSet", "message": "Scaled up replica set web-abc to 2", "type": "Normal",
          "source": {"component": "deployment-controller"}, "count": 1,
          "firstTimestamp": "2024-05-01T12:00:00Z", "lastTimestamp": "2024-05-01T12:00:00Z",
          "eventTime": None, "reportingComponent": "deployment-controller", "reportingInstance": "shoal"}
    out = validate("Event", ev)
    assert out["involvedObject"]["uid"] == "u1"
    assert "eventTime" not in out


def test_scale_and_delete_options():
    scale = {"kind": "Scale", "apiVersion": "autoscaling/v1", "metadata": {"name": "web", "namespace": "default"},
             "spec": {"replicas": 3}, "status": {"replicas": 2, "selector": "app=web"}}
    assert validate("Deployment", scale, subresource="scale") == scale
    opts = validate("DeleteOptions", {"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background",
                                      "gracePeriodSeconds": 0, "preconditions": {"uid": "u1"}})
    assert opts["propagationPolicy"] == "Background"
    assert validate("DeleteOptions", {"apiVersion": "meta.k8s.io/v1", "dryRun": ["All"]})["dryRun"] == ["All"]


def test_generate_name_without_name():
    p = pod()
    del p["metadata"]["name"]
    p["metadata"]["generateName"] = "web-"
    assert validate("Pod", p)["metadata"]["generateName"] == "web-"


def test_unknown_fields_ignored_or_warned_on_request():
    d = deployment(foo=1)
    assert "foo" not in validate("Deployment", d, field_validation="Ignore")["spec"]
    warnings = []
    validate("Deployment", d, field_validation="Warn", warnings=warnings)
    assert warnings == ['unknown field "spec.foo"']
