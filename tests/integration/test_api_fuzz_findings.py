"""5xx answers found while fuzzing the API (tests/integration/test_api_fuzz.py and probing
around it), each pinned here: every one was a 500 `internal error: RecursionError` and is
now a 400 that changes nothing.

- a request body nesting objects or arrays deeper than the decoders can recurse (JSON of
  every content type, YAML of an apply, inside a JSON patch's value): `app.MAX_BODY_DEPTH`;
- a `continue` token whose JSON nests that deep (or is longer than any token shoal makes).
"""
from __future__ import annotations

import base64

import httpx
import pytest

from shoal.apiserver.app import MAX_BODY_DEPTH, nests_deeper_than

pytestmark = pytest.mark.integration

DEEP = 50_000                   # what made json.loads (and yaml) raise RecursionError


def deep_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def deep_array(depth: int) -> str:
    return "[" * depth + "]" * depth


CM = "/api/v1/namespaces/default/configmaps"


@pytest.mark.parametrize("method, path, content_type, body", [
    ("POST", CM, "application/json", deep_array(DEEP)),
    ("POST", CM, "application/json", '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","labels":'
     + deep_object(DEEP) + "}}"),
    ("PUT", CM + "/seed", "application/json", deep_object(DEEP)),
    ("PATCH", CM + "/seed", "application/merge-patch+json", deep_object(DEEP)),
    ("PATCH", CM + "/seed", "application/strategic-merge-patch+json", deep_object(DEEP)),
    ("PATCH", CM + "/seed", "application/json-patch+json",
     '[{"op":"add","path":"/metadata/annotations","value":' + deep_array(900) + "}]"),     # decodes; the copy recursed
    ("PATCH", CM + "/seed?fieldManager=m", "application/apply-patch+yaml", "- " * 5000 + "1"),   # block YAML
    ("PATCH", CM + "/seed?fieldManager=m", "application/apply-patch+yaml", "[" * DEEP),           # flow YAML
    ("DELETE", CM + "/seed", "application/json", deep_object(DEEP)),
])
def test_a_deeply_nested_body_is_a_400_and_changes_nothing(api, method, path, content_type, body):
    c = api.client()
    c.create("configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "seed"}}, namespace="default")
    before = api.store.current_revision()
    r = httpx.request(method, api.url + path, content=body, timeout=30,
                      headers={"Authorization": f"Bearer {api.admin_token}", "Content-Type": content_type})
    assert r.status_code == 400, r.text[:300]
    assert r.json()["message"] == f"the request body nests objects and arrays more than {MAX_BODY_DEPTH} levels deep"
    assert api.store.current_revision() == before


def test_a_body_just_within_the_depth_reaches_validation(api):
    body = '{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":"x","labels":' + deep_object(MAX_BODY_DEPTH - 3) + "}}"
    r = httpx.post(api.url + CM, content=body, timeout=30,
                   headers={"Authorization": f"Bearer {api.admin_token}", "Content-Type": "application/json"})
    assert r.status_code == 400 and "cannot be handled as a ConfigMap" in r.json()["message"], r.text[:300]


@pytest.mark.parametrize("token", [
    base64.urlsafe_b64encode(b"[" * 3000).decode().rstrip("="),       # nests past the JSON decoder
    "A" * 5000,                                                      # longer than any token shoal makes
])
def test_a_pathological_continue_token_is_a_400(api, token):
    r = httpx.get(api.url + "/api/v1/pods", params={"limit": "1", "continue": token},
                  headers={"Authorization": f"Bearer {api.admin_token}"}, timeout=30)
    assert r.status_code == 400 and r.json()["message"].startswith("invalid continue token: continue key is not valid")


@pytest.mark.parametrize("value, limit, deeper", [
    ({}, 1, False), ({"a": {}}, 1, True), ([[[]]], 3, False), ([[[]]], 2, True),
    ({"a": [1, {"b": "x"}]}, 3, False), ("scalar", 0, False), (deep_array(10), 10, False),
])
def test_nests_deeper_than(value, limit, deeper):
    import json
    v = json.loads(value) if isinstance(value, str) and value.startswith("[") else value
    assert nests_deeper_than(v, limit) is deeper


def test_nests_deeper_than_measures_any_depth():
    v: list = []
    for _ in range(100_000):        # far past the recursion limit
        v = [v]
    assert nests_deeper_than(v, 99_999) and not nests_deeper_than(v, 100_001)
