"""Limits of the object model: integer fields within their Go types' ranges, names and header
values without control characters, and Status objects shaped as Kubernetes serializes them."""
import copy

import pytest

from shoal.machinery.api import errors
from shoal.machinery.api.models import KINDS, validate, validate_status
from shoal.machinery.api.models.base import INT32, INT64, IntRange
from shoal.machinery.api.models.validation import _int_plan
from shoal.machinery.api.names import (control_characters, is_dns1123_label, is_dns1123_subdomain,
                                       is_label_value, is_qualified_name)

DEPLOY = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
          "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                   "template": {"metadata": {"labels": {"app": "web"}},
                                "spec": {"containers": [{"name": "web", "image": "busybox:1",
                                                         "ports": [{"containerPort": 80}]}]}}}}


def _set(obj, path, value):
    parts = path.split(".")
    for p in parts[:-1]:
        obj = obj[int(p)] if p.isdigit() else obj[p]
    obj[parts[-1]] = value


@pytest.mark.parametrize("path,value,field,kind", [
    ("spec.replicas", 10**12, "spec.replicas", "int32"),
    ("spec.replicas", 2**31, "spec.replicas", "int32"),
    ("spec.template.spec.terminationGracePeriodSeconds", 2**70,
     "spec.template.spec.terminationGracePeriodSeconds", "int64"),
    ("spec.template.spec.terminationGracePeriodSeconds", 2**63,
     "spec.template.spec.terminationGracePeriodSeconds", "int64"),
    ("spec.template.spec.activeDeadlineSeconds", -(2**63) - 1, "spec.template.spec.activeDeadlineSeconds", "int64"),
    ("spec.minReadySeconds", 2**40, "spec.minReadySeconds", "int32"),
    ("metadata.generation", 2**64, "metadata.generation", "int64"),
    ("spec.template.spec.containers.0.ports.0.containerPort", 2**32 + 80,
     "spec.template.spec.containers[0].ports[0].containerPort", "int32"),
    ("spec.strategy", {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 2**31}},
     "spec.strategy.rollingUpdate.maxSurge", "int32"),       # IntOrString holds an int32
    ("spec.template.spec.securityContext", {"supplementalGroups": [1, 2**64]},
     "spec.template.spec.securityContext.supplementalGroups[1]", "int64"),
])
def test_integers_beyond_their_go_type_are_invalid_naming_the_field(path, value, field, kind):
    d = copy.deepcopy(DEPLOY)
    _set(d, path, value)
    with pytest.raises(errors.Invalid) as e:
        validate("Deployment", d)
    assert e.value.code == 422
    assert [c.field for c in e.value.causes] == [field], e.value.causes    # that problem alone
    assert f"(an {kind})" in e.value.causes[0].message


def test_the_largest_values_of_each_type_pass():
    d = copy.deepcopy(DEPLOY)
    d["spec"]["replicas"] = INT32.high
    d["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] = INT64.high
    out = validate("Deployment", d)
    assert out["spec"]["replicas"] == 2**31 - 1


def test_status_writes_are_range_checked_too():
    with pytest.raises(errors.Invalid) as e:
        validate_status("Pod", {"phase": "Running", "containerStatuses": [
            {"name": "c", "ready": True, "restartCount": 2**31, "image": "busybox", "imageID": "x"}]}, name="p")
    assert e.value.causes[0].field == "status.containerStatuses[0].restartCount"


def test_delete_options_grace_period_is_an_int64_and_dry_run_only_all():
    with pytest.raises(errors.Invalid) as e:
        validate("DeleteOptions", {"gracePeriodSeconds": 2**70})
    assert e.value.message.startswith('DeleteOptions.meta.k8s.io "" is invalid: gracePeriodSeconds: ')
    with pytest.raises(errors.Invalid) as e:
        validate("DeleteOptions", {"dryRun": ["All", "Some"]})
    assert e.value.message == ('DeleteOptions.meta.k8s.io "" is invalid: dryRun: Unsupported value: '
                               '["All","Some"]: supported values: "All"')
    assert validate("DeleteOptions", {"kind": "DeleteOptions", "apiVersion": "v1", "dryRun": ["All"]})


def _int_fields(model, seen=None):
    """(class, field) of every plain int in the models: each must carry a range."""
    import typing
    from pydantic import BaseModel
    seen = set() if seen is None else seen
    if model in seen:
        return []
    seen.add(model)
    out = []
    hints = typing.get_type_hints(model, include_extras=True)
    for name in model.model_fields:
        stack = [hints[name]]
        while stack:
            tp = stack.pop()
            origin = typing.get_origin(tp)
            if origin is typing.Annotated:
                if any(isinstance(m, IntRange) for m in tp.__metadata__):
                    continue
                stack.append(typing.get_args(tp)[0])
            elif origin is not None:
                stack.extend(typing.get_args(tp))
            elif tp is int:
                out.append((model.__name__, name))
            elif isinstance(tp, type) and issubclass(tp, BaseModel):
                out.extend(_int_fields(tp, seen))
    return out


def test_every_integer_field_of_every_kind_has_a_range():
    missing = [f for info in KINDS.values() for f in _int_fields(info.model)]
    assert not missing, f"declare these Int32 or Int64 (models/base.py): {missing}"
    assert _int_plan(KINDS["Pod"].model)      # and the plan finds them


# --- names -------------------------------------------------------------------------------

@pytest.mark.parametrize("check", [is_dns1123_label, is_dns1123_subdomain, is_label_value, is_qualified_name])
@pytest.mark.parametrize("suffix", ["\n", "\r\n", "\x00"])
def test_a_name_with_a_trailing_line_break_or_nul_is_not_a_name(check, suffix):
    assert check("web") == []
    assert check("web" + suffix), f"{check.__name__} accepted {'web' + suffix!r}"


def test_names_are_fine_without_control_characters():
    assert is_dns1123_subdomain("web") == [] and is_label_value("v1") == [] and is_qualified_name("a/b") == []
    assert control_characters("a b\tc") != [] and control_characters("web") == []
    assert "'\\r' at offset 3" in control_characters("web\r\nX: y")[0]


def test_probe_header_values_without_line_breaks():
    d = copy.deepcopy(DEPLOY)
    d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"] = {
        "httpGet": {"path": "/", "port": 80, "httpHeaders": [{"name": "X-A", "value": "ok\r\nHost: evil"}]}}
    with pytest.raises(errors.Invalid) as e:
        validate("Deployment", d)
    assert e.value.causes[0].field == "spec.template.spec.containers[0].readinessProbe.httpGet.httpHeaders[0].value"
    d["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["httpHeaders"] = [
        {"name": "X-A\n", "value": "ok"}]
    with pytest.raises(errors.Invalid):
        validate("Deployment", d)


# --- Status ------------------------------------------------------------------------------

def test_failure_status_in_go_field_order_with_omitempty():
    e = errors.NotFound('deployments.apps "web" not found', details={"name": "web", "group": "apps",
                                                                    "kind": "deployments"})
    assert list(e.status()) == ["kind", "apiVersion", "metadata", "status", "message", "reason", "details", "code"]
    assert e.status() == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                          "message": 'deployments.apps "web" not found', "reason": "NotFound",
                          "details": {"name": "web", "group": "apps", "kind": "deployments"}, "code": 404}
    core = errors.NotFound('pods "p" not found', details={"name": "p", "group": "", "kind": "pods"}).status()
    assert core["details"] == {"name": "p", "kind": "pods"}          # an empty group is left out
    bare = errors.BadRequest("bad").status()
    assert "details" not in bare and list(bare) == ["kind", "apiVersion", "metadata", "status", "message",
                                                    "reason", "code"]


def test_causes_and_details_keep_gos_order():
    e = errors.Invalid("x", causes=[errors.Cause("spec.replicas", "Invalid value: -1")],
                       details={"kind": "Deployment", "group": "apps", "name": "web"})
    det = e.status()["details"]
    assert list(det) == ["name", "group", "kind", "causes"]
    assert list(det["causes"][0]) == ["reason", "message", "field"]
    assert errors.Cause("", "m", "").to_dict() == {"message": "m"}


def test_success_status_normalized():
    out = errors.normalize_status({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                                   "details": {"uid": "u", "name": "p", "group": "", "kind": "pods"}})
    assert out == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                   "details": {"name": "p", "kind": "pods", "uid": "u"}}
    assert list(out["details"]) == ["name", "kind", "uid"]


def test_request_entity_too_large_round_trips():
    e = errors.RequestEntityTooLarge("Request entity too large: limit is 3145728")
    back = errors.from_status(413, e.status())
    assert isinstance(back, errors.RequestEntityTooLarge) and back.code == 413
