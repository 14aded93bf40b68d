"""The Node authorizer graph for Secrets and ConfigMaps (apiserver.auth), as pure decisions:
what a pod references (machinery.api.podrefs) and what a node may do with it."""
from __future__ import annotations

import pytest

from shoal.apiserver.auth import Principal, authorize, authorize_before_read, needs_graph_for_get
from shoal.machinery.api import errors
from shoal.machinery.api.podrefs import image_pull_secret_names, referenced_objects
from shoal.machinery.api.resources import resolve

pytestmark = pytest.mark.unit

NODE = Principal("node", "n1")
SECRETS, CONFIGMAPS, PODS = resolve("secrets"), resolve("configmaps"), resolve("pods")


def pod(ns: str | None = "default", **spec) -> dict:
    return {"metadata": {"name": "p", **({"namespace": ns} if ns else {})}, "spec": spec}


@pytest.mark.parametrize("p, refs", [
    (pod(imagePullSecrets=[{"name": "a"}, {"name": "b"}]), {("secrets", "default", "a"), ("secrets", "default", "b")}),
    (pod("team", imagePullSecrets=[{"name": "a"}]), {("secrets", "team", "a")}),
    (pod(None, imagePullSecrets=[{"name": "a"}]), {("secrets", "default", "a")}),
    (pod(imagePullSecrets=[{"name": "a"}, {"name": "a"}]), {("secrets", "default", "a")}),
    (pod(imagePullSecrets=[{"name": ""}, {}, "x", None]), set()),
    (pod(imagePullSecrets=None), set()),
    (pod(containers=[{"name": "c", "image": "x"}]), set()),
    ({"metadata": None, "spec": None}, set()),
])
def test_referenced_objects(p, refs):
    assert referenced_objects(p) == refs


def test_image_pull_secret_names_keep_order_without_repeats():
    assert image_pull_secret_names(pod(imagePullSecrets=[{"name": "b"}, {"name": "a"}, {"name": "b"}, {}])) == \
        ["b", "a"]


RELATED = {("secrets", "default", "regcred"), ("configmaps", "default", "conf")}
NO_RELATIONSHIP = "no relationship found between node 'n1' and this object"


@pytest.mark.parametrize("res, verb, ns, name, sub, related, refused", [
    (SECRETS, "get", "default", "regcred", None, RELATED, None),
    (CONFIGMAPS, "get", "default", "conf", None, RELATED, None),
    (SECRETS, "get", "default", "other", None, RELATED, NO_RELATIONSHIP),
    (SECRETS, "get", "team", "regcred", None, RELATED, NO_RELATIONSHIP),      # same name, other namespace
    (CONFIGMAPS, "get", "default", "regcred", None, RELATED, NO_RELATIONSHIP),  # same name, other kind
    (SECRETS, "get", "default", "regcred", None, None, NO_RELATIONSHIP),      # no graph given: nothing
    (SECRETS, "get", "default", "regcred", None, set(), NO_RELATIONSHIP),
    (SECRETS, "list", "default", None, None, RELATED, "can only get individual resources of this type"),
    (SECRETS, "watch", "default", None, None, RELATED, "can only get individual resources of this type"),
    (SECRETS, "list", None, None, None, RELATED, "can only get individual resources of this type"),
    (SECRETS, "update", "default", "regcred", None, RELATED, "can only get individual resources of this type"),
    (SECRETS, "patch", "default", "regcred", None, RELATED, "can only get individual resources of this type"),
    (SECRETS, "delete", "default", "regcred", None, RELATED, "can only get individual resources of this type"),
    (SECRETS, "create", "default", None, None, RELATED, "can only get individual resources of this type"),
    (SECRETS, "deletecollection", "default", None, None, RELATED, "can only get individual resources of this type"),
])
def test_node_graph_decisions(res, verb, ns, name, sub, related, refused):
    if refused is None:
        authorize(NODE, verb, res, namespace=ns, name=name, subresource=sub, related=related)
        return
    with pytest.raises(errors.Forbidden) as err:
        authorize(NODE, verb, res, namespace=ns, name=name, subresource=sub, related=related)
    target = f'{res.plural} "{name}"' if name else res.plural
    where = f' in the namespace "{ns}"' if ns else ""
    assert err.value.message == (f'{target} is forbidden: User "system:node:n1" cannot {verb} resource '
                                 f'"{res.plural}" in API group ""{where}: {refused}')


@pytest.mark.parametrize("principal, res, needs", [
    (NODE, SECRETS, True), (NODE, CONFIGMAPS, True), (NODE, PODS, False),
    (Principal("admin"), SECRETS, False), (Principal("join"), SECRETS, False),
])
def test_which_gets_need_the_graph(principal, res, needs):
    assert needs_graph_for_get(principal, res) is needs


def test_admin_reads_and_writes_every_secret():
    for verb in ("get", "list", "watch", "update", "delete"):
        authorize(Principal("admin"), verb, SECRETS, namespace="team", name="x")


@pytest.mark.parametrize("principal, res, verb, early", [
    (NODE, SECRETS, "update", True), (NODE, SECRETS, "delete", True), (NODE, CONFIGMAPS, "patch", True),
    (NODE, resolve("deployments"), "delete", True),
    (NODE, PODS, "delete", False),              # decided on the stored pod (bound to the node?)
    (NODE, resolve("nodes"), "update", False), (NODE, resolve("leases"), "update", False),
    (NODE, resolve("events"), "patch", False),
    (Principal("admin"), SECRETS, "delete", False),
    (Principal("join"), SECRETS, "delete", True),
])
def test_writes_refused_before_the_stored_object_is_read(principal, res, verb, early):
    """A refusal that does not depend on the object comes before it is read: the same answer
    whether it exists or not (no oracle of names in other namespaces)."""
    if early:
        with pytest.raises(errors.Forbidden):
            authorize_before_read(principal, verb, res, namespace="default", name="x")
    else:
        authorize_before_read(principal, verb, res, namespace="default", name="x")
