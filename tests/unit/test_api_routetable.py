"""apiserver.routetable: Kubernetes' resource paths resolved by meaning, not by regex."""
import pytest

from shoal.machinery.api.resources import RESOURCES
from shoal.apiserver.routetable import RouteTable

pytestmark = pytest.mark.unit


def h(tag):
    async def handler(request, **kw):
        return tag
    handler.tag = tag
    return handler


@pytest.fixture
def table():
    t = RouteTable(RESOURCES)
    for method, template in [
        ("GET", "/api/v1/namespaces/{namespace}/pods"),
        ("POST", "/api/v1/namespaces/{namespace}/pods"),
        ("GET", "/api/v1/pods"),
        ("GET", "/api/v1/namespaces/{namespace}/pods/{name}"),
        ("PUT", "/api/v1/namespaces/{namespace}/pods/{name}/status"),
        ("GET", "/api/v1/namespaces/{name}"),
        ("PUT", "/api/v1/namespaces/{name}/status"),
        ("GET", "/api/v1/nodes/{name}"),
        ("PATCH", "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale"),
    ]:
        t.add(method, template, h(f"{method} {template}"))
    return t


@pytest.mark.parametrize("method,path,template,params", [
    ("GET", "/api/v1/namespaces/default/pods", "/api/v1/namespaces/{namespace}/pods", {"namespace": "default"}),
    ("POST", "/api/v1/namespaces/kube-system/pods", "/api/v1/namespaces/{namespace}/pods",
     {"namespace": "kube-system"}),
    ("GET", "/api/v1/pods", "/api/v1/pods", {}),
    ("GET", "/api/v1/namespaces/a/pods/web-1", "/api/v1/namespaces/{namespace}/pods/{name}",
     {"namespace": "a", "name": "web-1"}),
    ("PUT", "/api/v1/namespaces/a/pods/web-1/status", "/api/v1/namespaces/{namespace}/pods/{name}/status",
     {"namespace": "a", "name": "web-1"}),
    # the namespace object itself, and its status: cluster-scoped, though they start like a namespaced path
    ("GET", "/api/v1/namespaces/prod", "/api/v1/namespaces/{name}", {"name": "prod"}),
    ("PUT", "/api/v1/namespaces/prod/status", "/api/v1/namespaces/{name}/status", {"name": "prod"}),
    ("GET", "/api/v1/nodes/n1", "/api/v1/nodes/{name}", {"name": "n1"}),
    ("PATCH", "/apis/apps/v1/namespaces/a/deployments/web/scale",
     "/apis/apps/v1/namespaces/{namespace}/deployments/{name}/scale", {"namespace": "a", "name": "web"}),
])
def test_resolves_to_the_route_and_its_parameters(table, method, path, template, params):
    handler, got = table.resolve(method, path)
    assert handler.tag == f"{method} {template}" and got == params


@pytest.mark.parametrize("method,path", [
    ("DELETE", "/api/v1/namespaces/a/pods/web-1"),            # a method not routed: FastAPI says 405
    ("GET", "/api/v1/namespaces/a/pods/"),                     # trailing slash: FastAPI redirects
    ("GET", "/api/v1/namespaces/a//pods"),
    ("GET", "/api/v1/namespaces/a/widgets"),                   # unknown plural
    ("GET", "/api/v1/namespaces/a/pods/web-1/status/extra"),   # too deep
    ("GET", "/api/v2/pods"),
    ("GET", "/apis/apps/v1"),                                  # discovery: FastAPI's
    ("GET", "/healthz"),
    ("GET", "/openapi.json"),
    ("GET", "api/v1/pods"),
])
def test_everything_else_is_left_to_fastapi(table, method, path):
    assert table.resolve(method, path) is None


def test_add_refuses_what_it_cannot_route(table):
    with pytest.raises(ValueError, match="routed twice"):
        table.add("GET", "/api/v1/namespaces/{namespace}/pods", h("again"))
    with pytest.raises(ValueError, match="not a resource path"):
        table.add("GET", "/healthz", h("x"))
    with pytest.raises(ValueError, match="path parameters"):
        table.add("GET", "/api/v1/namespaces/{ns}/pods/{id}", h("x"))
