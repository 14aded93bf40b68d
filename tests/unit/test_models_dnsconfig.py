"""spec.dnsConfig on pods and templates: Kubernetes' validatePodDNSConfig, field by field."""
from __future__ import annotations

import copy

import pytest

from shoal.machinery.api import errors, models

pytestmark = pytest.mark.unit

POD = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p", "namespace": "default"},
       "spec": {"containers": [{"name": "c", "image": "busybox"}]}}


def pod(**spec):
    p = copy.deepcopy(POD)
    p["spec"].update(spec)
    return p


@pytest.mark.parametrize("spec", [
    {"dnsConfig": {"nameservers": ["1.1.1.1", "fd00::1", "10.0.0.2"], "searches": ["a.example", "b.example."],
                   "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]}},
    {"dnsPolicy": "None", "dnsConfig": {"nameservers": ["1.1.1.1"]}},
    {"dnsPolicy": "Default", "dnsConfig": {}},
    {"dnsConfig": {"searches": [f"d{i}.example" for i in range(32)]}},
])
def test_valid(spec):
    out = models.validate("Pod", pod(**spec))
    assert out["spec"]["dnsConfig"] == spec["dnsConfig"]


@pytest.mark.parametrize("spec, field, message", [
    ({"dnsPolicy": "None"}, "spec.dnsConfig", "must provide `dnsConfig` when `dnsPolicy` is None"),
    ({"dnsPolicy": "None", "dnsConfig": {"searches": ["a.example"]}}, "spec.dnsConfig.nameservers",
     "must provide at least one DNS nameserver when `dnsPolicy` is None"),
    ({"dnsConfig": {"nameservers": ["1.1.1.1", "1.1.1.2", "1.1.1.3", "1.1.1.4"]}}, "spec.dnsConfig.nameservers",
     "must not have more than 3 nameservers"),
    ({"dnsConfig": {"nameservers": ["dns.example"]}}, "spec.dnsConfig.nameservers[0]", "must be a valid IP address"),
    ({"dnsConfig": {"searches": [f"d{i}.example" for i in range(33)]}}, "spec.dnsConfig.searches",
     "must not have more than 32 search paths"),
    ({"dnsConfig": {"searches": ["a" * 60 + f".x{i}" for i in range(32)]}}, "spec.dnsConfig.searches",
     "must not have more than 2048 characters (including spaces) in the search list"),
    ({"dnsConfig": {"searches": ["Bad_Name"]}}, "spec.dnsConfig.searches[0]", "RFC 1123 subdomain"),
    ({"dnsConfig": {"searches": ["a..b"]}}, "spec.dnsConfig.searches[0]", "RFC 1123 subdomain"),
    ({"dnsConfig": {"options": [{"value": "2"}]}}, "spec.dnsConfig.options[0]", "must not be empty"),
    ({"dnsConfig": {"servers": ["1.1.1.1"]}}, "", "unknown field"),
])
def test_invalid(spec, field, message):
    with pytest.raises(errors.ApiError) as e:
        models.validate("Pod", pod(**spec))
    assert message in str(e.value)
    if field:
        assert field in [c.field for c in e.value.causes], e.value


def test_in_a_deployment_template():
    dep = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "default"},
           "spec": {"selector": {"matchLabels": {"a": "b"}},
                    "template": {"metadata": {"labels": {"a": "b"}},
                                 "spec": {"dnsPolicy": "None", "containers": [{"name": "c", "image": "busybox"}]}}}}
    with pytest.raises(errors.Invalid) as e:
        models.validate("Deployment", dep)
    assert "spec.template.spec.dnsConfig" in [c.field for c in e.value.causes]
