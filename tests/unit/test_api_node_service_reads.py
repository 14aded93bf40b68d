"""A node credential reads Services and EndpointSlices everywhere (its service proxy), and
nothing more of them (apiserver.auth)."""
from __future__ import annotations

import pytest

from shoal.apiserver.auth import Principal, authorize
from shoal.machinery.api import errors
from shoal.machinery.api.resources import resolve

pytestmark = pytest.mark.unit

NODE = Principal("node", "n1")
SERVICES, SLICES, ENDPOINTS = resolve("services"), resolve("endpointslices"), resolve("endpoints")


@pytest.mark.parametrize("res", [SERVICES, SLICES])
@pytest.mark.parametrize("verb, ns, name", [
    ("get", "default", "web"), ("list", "default", None), ("list", None, None), ("watch", None, None),
    ("watch", "team", None),
])
def test_a_node_reads_services_and_endpointslices_of_every_namespace(res, verb, ns, name):
    authorize(NODE, verb, res, namespace=ns, name=name)


@pytest.mark.parametrize("res, verb, name, sub", [
    (SERVICES, "create", None, None), (SERVICES, "update", "web", None), (SERVICES, "patch", "web", None),
    (SERVICES, "delete", "web", None), (SERVICES, "deletecollection", None, None),
    (SERVICES, "update", "web", "status"), (SERVICES, "get", "web", "status"),
    (SLICES, "create", None, None), (SLICES, "update", "web-abc", None), (SLICES, "delete", "web-abc", None),
    (ENDPOINTS, "get", "web", None), (ENDPOINTS, "list", None, None),      # the proxy reads slices only
])
def test_a_node_writes_none_of_them(res, verb, name, sub):
    with pytest.raises(errors.Forbidden) as err:
        authorize(NODE, verb, res, namespace="default", name=name, subresource=sub)
    assert f'User "system:node:n1" cannot {verb} resource "{res.plural}' in err.value.message
