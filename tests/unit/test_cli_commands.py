"""The CLI end to end in-process against an in-memory fake API: what it prints, what it sends, exit codes."""
from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from datetime import datetime, timezone

import pytest
import yaml

from shoal.machinery.api import errors
from shoal.machinery.client.rest import ConnectionFailed
from shoal.cli import main as cli_main
from shoal.cli.commands import UsageError, parse_duration, parse_image_pairs, parse_targets
from cli_fakeapi import FakeApi

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)


def run(argv, api, stdin=None, monotonic=None):
    out, err = io.StringIO(), io.StringIO()
    kw = {"monotonic": monotonic} if monotonic else {}
    rc = cli_main.main(argv, stdout=out, stderr=err, stdin=stdin or io.StringIO(""), now=lambda: NOW,
                       client_factory=lambda ctx: api, **kw)
    return rc, out.getvalue(), err.getvalue()


def deployment(name="web", ns="default", image="web:v1", replicas=3, status=None, **md):
    return {"kind": "Deployment", "metadata": {"name": name, "namespace": ns, "labels": {"app": name}, **md},
            "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}},
                     "template": {"metadata": {"labels": {"app": name}},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}},
            "status": status or {"replicas": replicas, "readyReplicas": replicas, "updatedReplicas": replicas,
                                 "availableReplicas": replicas, "observedGeneration": 1}}


def replicaset(deploy, revision, image, hash_):
    return {"kind": "ReplicaSet",
            "metadata": {"name": f"web-{hash_}", "namespace": "default",
                         "labels": {"app": "web", "pod-template-hash": hash_},
                         "annotations": {"deployment.kubernetes.io/revision": str(revision)},
                         "ownerReferences": [{"apiVersion": "apps/v1", "kind": "Deployment", "name": "web",
                                              "uid": deploy["metadata"]["uid"], "controller": True}]},
            "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "web", "pod-template-hash": hash_}},
                     "template": {"metadata": {"labels": {"app": "web", "pod-template-hash": hash_}},
                                  "spec": {"containers": [{"name": "web", "image": image}]}}}}


@pytest.fixture
def api():
    a = FakeApi()
    a.add(deployment())
    a.add(deployment("api", image="api:v3", replicas=1))
    a.add(deployment("other", ns="shop"))
    a.add({"kind": "Pod", "metadata": {"name": "web-1", "namespace": "default", "labels": {"app": "web"},
                                       "creationTimestamp": "2024-05-01T11:58:00Z"},
           "spec": {"nodeName": "node-a", "containers": [{"name": "web", "image": "web:v1"}]},
           "status": {"phase": "Running", "podIP": "10.244.1.2", "containerStatuses": [
               {"name": "web", "ready": True, "restartCount": 0, "state": {"running": {}}}]}})
    return a


def test_parse_targets_and_durations():
    assert [(t.resource.kind, t.names) for t in parse_targets(["deploy,rs"])] == [
        ("Deployment", ()), ("ReplicaSet", ())]
    assert [(t.resource.kind, t.names) for t in parse_targets(["po/a", "deployment/b"])] == [
        ("Pod", ("a",)), ("Deployment", ("b",))]
    assert [t.resource.kind for t in parse_targets(["all"])] == ["Pod", "Service", "Deployment", "ReplicaSet"]
    with pytest.raises(UsageError):
        parse_targets(["pods", "po/a"])
    with pytest.raises(UsageError):
        parse_targets([])
    assert [parse_duration(x) for x in ("90", "30s", "5m", "1h30m", "0", "250ms")] == [90, 30, 300, 5400, 0, 0.25]
    with pytest.raises(UsageError, match='invalid duration "5 minutes"'):
        parse_duration("5 minutes")
    assert parse_image_pairs(["deployment/web", "web=a:1", "*=b"]) == (["deployment/web"], {"web": "a:1", "*": "b"})
    with pytest.raises(UsageError):
        parse_image_pairs(["deployment/web"])


def test_get_table_and_namespaces(api):
    rc, out, err = run(["get", "deploy"], api)
    assert rc == 0 and out.splitlines() == [
        "NAME   READY   UP-TO-DATE   AVAILABLE   AGE",
        "api    1/1     1            1           60s",
        "web    3/3     3            3           60s"]
    rc, out, _ = run(["get", "deployments", "-A"], api)
    assert [ln.split()[:2] for ln in out.splitlines()] == [["NAMESPACE", "NAME"], ["default", "api"],
                                                          ["default", "web"], ["shop", "other"]]
    rc, out, _ = run(["get", "deploy", "-n", "shop"], api)
    assert out.splitlines()[1].startswith("other ")
    rc, out, err = run(["get", "rs"], api)
    assert (rc, out, err) == (0, "", "No resources found in default namespace.\n")
    rc, out, err = run(["get", "pods", "-o", "wide", "-l", "app=web"], api)
    assert out.splitlines()[1].split() == ["web-1", "1/1", "Running", "0", "2m", "10.244.1.2", "node-a", "<none>",
                                           "<none>"]
    assert ("list", "Pod", "default", "app=web", None, False) in api.calls


def test_get_names_kinds_and_formats(api):
    rc, out, err = run(["get", "deploy", "web", "nope"], api)
    assert rc == 1 and out.splitlines()[1].startswith("web ")
    assert err == 'error: deployments.apps "nope" not found\n'
    rc, out, _ = run(["get", "deploy/web", "po/web-1"], api)
    assert "deployment.apps/web" in out and "pod/web-1" in out and out.count("NAME") == 2
    rc, out, _ = run(["get", "deploy/web", "-o", "yaml"], api)
    obj = yaml.safe_load(out)
    assert obj["kind"] == "Deployment" and obj["apiVersion"] == "apps/v1" and obj["metadata"]["name"] == "web"
    rc, out, _ = run(["get", "deploy", "-o", "json"], api)
    lst = json.loads(out)
    assert lst["kind"] == "List" and [i["metadata"]["name"] for i in lst["items"]] == ["api", "web"]
    rc, out, _ = run(["get", "deploy", "-o", "name"], api)
    assert out == "deployment.apps/api\ndeployment.apps/web\n"
    rc, out, _ = run(["get", "deploy", "--show-labels"], api)
    assert out.splitlines()[0].endswith("LABELS") and out.splitlines()[2].endswith("app=web")


def test_get_watch_prints_rows_as_they_change_until_request_timeout(api):
    changed = deployment(status={"readyReplicas": 1, "updatedReplicas": 3, "availableReplicas": 1})
    changed["metadata"].update(resourceVersion="500", creationTimestamp="2024-05-01T11:59:00Z")
    api.watch_scripts = [[{"type": "MODIFIED", "object": changed},
                          {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "501"}}}], []]
    ticks = iter([0.0, 0.0, 0.1, 0.2, 10.0, 20.0])
    rc, out, _ = run(["get", "deploy", "web", "-w", "--request-timeout", "5s"], api, monotonic=lambda: next(ticks))
    lines = out.splitlines()
    assert rc == 0 and lines[0].startswith("NAME") and lines[1].startswith("web ")
    assert lines[2].split() == ["web", "1/3", "3", "1", "60s"]
    assert lines[2].index("1/3") == lines[0].index("READY")  # aligned with the header printed before
    watch_calls = [c for c in api.calls if c[0] == "watch"]
    assert watch_calls[0][3]["field_selector"] == "metadata.name=web"
    assert watch_calls[1][3]["resource_version"] == "501"


def test_describe_pod_and_deployment_fetch_events_by_uid(api):
    d = api.objects[("Deployment", "default", "web")]
    api.add(replicaset(d, 1, "web:v1", "aaa"))
    api.add({"kind": "Event", "metadata": {"name": "e1", "namespace": "default"}, "type": "Normal",
             "reason": "ScalingReplicaSet", "message": "Scaled up replica set web-aaa to 3",
             "source": {"component": "deployment-controller"}, "firstTimestamp": "2024-05-01T11:59:30Z",
             "involvedObject": {"kind": "Deployment", "name": "web", "uid": d["metadata"]["uid"]}})
    rc, out, _ = run(["describe", "deployment/web"], api)
    assert rc == 0
    assert "Replicas:               3 desired | 3 updated | 3 total | 3 available | 0 unavailable" in out
    assert re.search(r"\nNewReplicaSet: +web-aaa \(0/0 replicas created\)\n", out)
    assert "\n  Containers:\n   web:\n    Image:" in out
    assert "  Normal  ScalingReplicaSet  30s   deployment-controller  Scaled up replica set web-aaa to 3" in out
    assert ("list", "Event", "default", None, f"involvedObject.uid={d['metadata']['uid']}", False) in api.calls
    rc, out, _ = run(["describe", "pod", "web-1"], api)
    assert "Node:" in out and "Events:             <none>" in out and "Restart Count:  0" in out


def test_delete_by_name_file_and_not_found(api, tmp_path):
    rc, out, err = run(["delete", "deployment", "web"], api)
    assert (rc, out) == (0, 'deployment.apps "web" deleted\n')
    assert ("Deployment", "default", "web") not in api.objects
    rc, out, err = run(["delete", "deploy/web"], api)
    assert rc == 1 and err == 'error: deployments.apps "web" not found\n'
    rc, out, err = run(["delete", "deploy/web", "--ignore-not-found"], api)
    assert (rc, err) == (0, "")
    f = tmp_path / "d.yaml"
    f.write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: other, namespace: shop}\n")
    rc, out, err = run(["delete", "-f", str(f), "--grace-period", "0", "--no-wait"], api)
    assert (rc, out) == (0, 'deployment.apps "other" deleted\n')
    assert ("delete", "Deployment", "other", "shop", 0) in api.calls
    rc, out, err = run(["delete", "pods"], api)
    assert rc == 1 and "no name was specified" in err


def test_delete_cascade_and_server_dry_run(api):
    rc, out, _ = run(["delete", "deployment", "web", "--dry-run=server"], api)
    assert (rc, out) == (0, 'deployment.apps "web" deleted (server dry run)\n')
    assert ("Deployment", "default", "web") in api.objects and api.delete_options[-1] == ("Background", True)
    assert not any(c[0] == "watch" for c in api.calls)         # nothing to wait for
    for flag, policy in (("orphan", "Orphan"), ("foreground", "Foreground"), ("background", "Background")):
        run(["delete", "pod", "nothing", f"--cascade={flag}", "--ignore-not-found"], api)
        assert api.delete_options[-1] == (policy, False)
    rc, out, err = run(["delete", "deployment", "web", "--cascade=false"], api)
    assert rc == 2 and "invalid choice: 'false'" in err


def test_delete_waits_for_terminating_objects_then_times_out(api):
    # the object stays (as a pod with a deletionTimestamp does) and no DELETED event comes
    api.delete = lambda *a, **k: {"kind": "Pod", "metadata": {"uid": api.objects[("Pod", "default", "web-1")]
                                                              ["metadata"]["uid"]}}
    ticks = iter([0.0, 1.0, 50.0, 200.0, 300.0])
    rc, out, err = run(["delete", "pod", "web-1", "--timeout", "60s"], api, monotonic=lambda: next(ticks))
    assert rc == 1 and out == 'pod "web-1" deleted\n'
    assert 'timed out waiting for pods "web-1" to be deleted' in err
    assert any(c[0] == "watch" for c in api.calls)


def test_scale_and_set_image(api):
    rc, out, _ = run(["scale", "deployment/web", "--replicas", "5"], api)
    assert (rc, out) == (0, "deployment.apps/web scaled\n")
    assert ("patch", "Deployment", "web", "scale", {"spec": {"replicas": 5}}) in api.calls
    rc, out, err = run(["scale", "pod/web-1", "--replicas", "2"], api)
    assert rc == 1 and "cannot be scaled" in err
    rc, out, _ = run(["set", "image", "deployment/web", "web=web:v2"], api)
    assert (rc, out) == (0, "deployment.apps/web image updated\n")
    assert api.objects[("Deployment", "default", "web")]["spec"]["template"]["spec"]["containers"][0]["image"] == \
        "web:v2"
    rc, out, err = run(["set", "image", "deployment/web", "sidecar=x"], api)
    assert rc == 1 and err == 'error: unable to find container named "sidecar" in deployment.apps/web\n'


def test_undo_and_describe_use_the_controllers_template_rule(api):
    """The bug the shared rule fixed (machinery/api/podtemplate.py): the Deployment's template
    spells a default (initialDelaySeconds: 0) its ReplicaSet's leaves out. The controller keeps
    that ReplicaSet as the new one; so must describe, and undo to it is a skipped rollback."""
    d = api.objects[("Deployment", "default", "web")]
    api.add(replicaset(d, 1, "web:v2", "bbb"))
    api.add(replicaset(d, 2, "web:v1", "aaa"))
    probe = {"tcpSocket": {"port": 80}}
    api.objects[("ReplicaSet", "default", "web-aaa")]["spec"]["template"]["spec"]["containers"][0][
        "readinessProbe"] = dict(probe)
    d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = dict(probe, initialDelaySeconds=0)
    rc, out, _ = run(["describe", "deployment/web"], api)
    assert re.search(r"\nNewReplicaSet: +web-aaa ", out)
    rc, out, _ = run(["rollout", "undo", "deployment/web", "--to-revision", "2"], api)
    assert out == "deployment.apps/web skipped rollback (current template already matches revision 2)\n"
    assert d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["initialDelaySeconds"] == 0


def test_rollout_history_undo_pause_resume_restart(api):
    d = api.objects[("Deployment", "default", "web")]
    api.add(replicaset(d, 1, "web:v1", "aaa"))
    api.add(replicaset(d, 2, "web:v2", "bbb"))
    api.objects[("ReplicaSet", "default", "web-bbb")]["metadata"]["annotations"]["kubernetes.io/change-cause"] = \
        "set image web=web:v2"
    api.objects[("Deployment", "default", "web")]["spec"]["template"]["spec"]["containers"][0]["image"] = "web:v2"
    rc, out, _ = run(["rollout", "history", "deployment/web"], api)
    assert out == "deployment.apps/web\nREVISION  CHANGE-CAUSE\n1         <none>\n2         set image web=web:v2\n\n"
    rc, out, _ = run(["rollout", "history", "deploy/web", "--revision", "1"], api)
    assert out.startswith("deployment.apps/web with revision #1\nPod Template:\n") and "web:v1" in out
    assert "pod-template-hash" not in out
    rc, out, _ = run(["rollout", "undo", "deployment/web"], api)
    assert (rc, out) == (0, "deployment.apps/web rolled back\n")
    tmpl = api.objects[("Deployment", "default", "web")]["spec"]["template"]
    assert tmpl["spec"]["containers"][0]["image"] == "web:v1" and tmpl["metadata"]["labels"] == {"app": "web"}
    rc, out, _ = run(["rollout", "undo", "deployment/web", "--to-revision", "1"], api)
    assert out == "deployment.apps/web skipped rollback (current template already matches revision 1)\n"
    rc, out, err = run(["rollout", "undo", "deployment/web", "--to-revision", "9"], api)
    assert rc == 1 and err == "error: unable to find specified revision 9 in history\n"
    assert run(["rollout", "pause", "deployment/web"], api)[1] == "deployment.apps/web paused\n"
    rc, _, err = run(["rollout", "pause", "deployment/web"], api)
    assert rc == 1 and err == 'error: deployments.apps "web" is already paused\n'
    rc, _, err = run(["rollout", "restart", "deployment/web"], api)
    assert rc == 1 and "can't restart paused deployment" in err
    assert run(["rollout", "resume", "deployment/web"], api)[1] == "deployment.apps/web resumed\n"
    assert run(["rollout", "restart", "deployment/web"], api)[1] == "deployment.apps/web restarted\n"
    ann = api.objects[("Deployment", "default", "web")]["spec"]["template"]["metadata"]["annotations"]
    assert ann == {"kubectl.kubernetes.io/restartedAt": "2024-05-01T12:00:00Z"}
    rc, _, err = run(["rollout", "status", "pod/web-1"], api)
    assert rc == 1 and "supports deployments only" in err


def test_rollout_status_success_and_deadline(api):
    rc, out, _ = run(["rollout", "status", "deployment/web"], api)
    assert (rc, out) == (0, 'deployment "web" successfully rolled out\n')
    api.objects[("Deployment", "default", "api")]["status"] = {
        "observedGeneration": 1, "updatedReplicas": 0, "conditions": [
            {"type": "Progressing", "status": "False", "reason": "ProgressDeadlineExceeded"}]}
    rc, out, err = run(["rollout", "status", "deploy/api"], api)
    assert (rc, out, err) == (1, "", 'error: deployment "api" exceeded its progress deadline\n')
    rc, out, err = run(["rollout", "status", "deploy/nope"], api)
    assert (rc, err) == (1, 'error: deployments.apps "nope" not found\n')


def test_logs_version_and_api_resources(api):
    api.logs_text = "hello\nworld\n"
    rc, out, _ = run(["logs", "web-1", "--tail", "5"], api)
    assert (rc, out) == (0, "hello\nworld\n")
    assert ("logs", "web-1", "default", {"container": None, "follow": False, "tail_lines": 5, "previous": False}) \
        in api.calls
    rc, out, _ = run(["logs", "deploy/web", "-f"], api)
    assert rc == 0 and [c for c in api.calls if c[0] == "logs"][-1][3]["follow"] is True
    rc, out, err = run(["logs", "web-1", "-c", "nope"], api)
    assert rc == 1 and "container nope is not valid for pod web-1" in err
    rc, out, _ = run(["version"], api)
    assert out.startswith("Client Version: v") and "Server Version: v1.32.0-shoal" in out
    rc, out, _ = run(["api-resources"], api)
    assert "deployments      deploy       apps/v1" in out
    assert "endpointslices                discovery.k8s.io/v1      true         EndpointSlice" in out


def test_errors_connection_unknown_kind_usage_help(api):
    class Down(FakeApi):
        def list(self, *a, **k):
            raise ConnectionFailed("cannot reach the API server at http://127.0.0.1:1: refused")
    rc, out, err = run(["get", "pods"], Down())
    assert rc == 1 and err == ("error: cannot reach the API server at http://fake: is it running? "
                               "(shoal up / shoal server)\n")
    rc, out, err = run(["get", "widgets"], api)
    assert (rc, err) == (1, 'error: the server doesn\'t have a resource type "widgets"\n')

    class Locked(FakeApi):
        def list(self, *a, **k):
            raise errors.Forbidden('pods is forbidden: node "n1" cannot list pods')
    rc, out, err = run(["get", "pods"], Locked())
    assert rc == 1 and err.startswith("error: Forbidden: pods is forbidden")
    rc, out, err = run(["get", "pods", "-o", "table"], api)
    assert rc == 2 and "invalid choice" in err
    for argv in (["--help"], ["get", "--help"], ["rollout", "status", "--help"], ["set", "image", "--help"]):
        rc, out, err = run(argv, api)
        assert rc == 0 and "Example" in out, argv
    rc, out, _ = run(["--version"], api)
    assert rc == 0 and out.startswith("shoal ")


def test_missing_kubeconfig_is_reported(tmp_path):
    out, err = io.StringIO(), io.StringIO()
    rc = cli_main.main(["--kubeconfig", str(tmp_path / "none"), "get", "pods"], stdout=out, stderr=err)
    assert rc == 1 and f"kubeconfig {tmp_path / 'none'} not found" in err.getvalue()


def test_extensions_missing_are_skipped_and_broken_ones_reported(tmp_path, monkeypatch):
    pkg = tmp_path / "shoalext"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "cmd_good.py").write_text(
        "def register(sub):\n    p = sub.add_parser('good')\n    p.set_defaults(func=lambda a: a.ctx.line('hi') or 3)\n")
    (pkg / "cmd_broken.py").write_text("import no_such_dependency_xyz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    parser = cli_main.build_parser(extensions=("shoalext.cmd_good", "shoalext.cmd_broken", "shoalext.cmd_missing"))
    choices = next(a for a in parser._actions if a.dest == "command").choices
    assert "good" in choices and "broken" in choices and "missing" not in choices
    monkeypatch.setattr(cli_main, "EXTENSION_MODULES", ("shoalext.cmd_good", "shoalext.cmd_broken"))
    rc, out, _ = run(["good"], FakeApi())
    assert (rc, out) == (3, "hi\n")
    rc, out, err = run(["broken", "x"], FakeApi())
    assert rc == 1 and "importing shoalext.cmd_broken failed" in err and "no_such_dependency_xyz" in err


def test_completion_scripts_are_valid_shell_and_know_commands(api):
    rc, out, _ = run(["completion", "bash"], api)
    assert rc == 0 and "complete -F _shoal shoal" in out
    for word in ('"rollout") echo "history pause restart resume status undo"', "deployments", '"get -o"'):
        assert word in out
    subprocess.run(["bash", "-n"], input=out, text=True, check=True)
    # drive the function as bash would for `shoal rollout st<TAB>` and `shoal get -o <TAB>`
    script = out + """
COMP_WORDS=(shoal rollout st); COMP_CWORD=2; _shoal; echo "${COMPREPLY[*]}"
COMP_WORDS=(shoal get -o ""); COMP_CWORD=3; _shoal; echo "${COMPREPLY[*]}"
COMP_WORDS=(shoal -n x ge); COMP_CWORD=3; _shoal; echo "${COMPREPLY[*]}"
COMP_WORDS=(shoal get dep); COMP_CWORD=2; _shoal; echo "${COMPREPLY[*]}"
"""
    res = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert res.stdout.splitlines() == ["status", "wide yaml json name", "get", "deploy deployment deployments"]
    rc, out, _ = run(["completion", "zsh"], api)
    assert out.startswith("#compdef shoal") and "bashcompinit" in out


def test_console_entry_point_runs_as_module():
    res = subprocess.run([sys.executable, "-m", "shoal.cli", "version", "--client"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.startswith("Client Version: v")


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_errors_are_red_on_a_terminal_and_plain_with_no_color(api, monkeypatch):
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm-256color")
    err = _Tty()
    rc = cli_main.main(["get", "deploy", "nope"], stdout=io.StringIO(), stderr=err, client_factory=lambda c: api)
    assert rc == 1 and "\x1b[" in err.getvalue() and 'deployments.apps "nope" not found' in err.getvalue()
    monkeypatch.setenv("NO_COLOR", "1")
    err = _Tty()
    cli_main.main(["get", "deploy", "nope"], stdout=io.StringIO(), stderr=err, client_factory=lambda c: api)
    assert err.getvalue() == 'error: deployments.apps "nope" not found\n'
