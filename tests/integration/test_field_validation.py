"""fieldValidation: Strict refuses unknown fields; Warn and Ignore drop them, each with a
Warning header (shoal never drops a field without saying so)."""
from __future__ import annotations

import httpx
import pytest

pytestmark = pytest.mark.integration

CM = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "default"},
      "data": {"a": "b"}, "dataa": {"typo": "x"}}


@pytest.fixture
def http(api):
    with httpx.Client(base_url=api.url, headers={"Authorization": f"Bearer {api.admin_token}"}) as c:
        yield c


@pytest.mark.parametrize("mode", ["Warn", "Ignore"])
def test_warn_and_ignore_drop_with_a_warning(http, mode):
    r = http.post(f"/api/v1/namespaces/default/configmaps?fieldValidation={mode}", json=CM)
    assert r.status_code == 201, r.text
    assert r.headers.get_list("warning") == ['299 - "unknown field \\"dataa\\""']
    stored = http.get("/api/v1/namespaces/default/configmaps/c").json()
    assert "dataa" not in stored and stored["data"] == {"a": "b"}
    # an update too
    upd = dict(stored, dataa={"x": "y"}, data={"a": "c"})
    r = http.put(f"/api/v1/namespaces/default/configmaps/c?fieldValidation={mode}", json=upd)
    assert r.status_code == 200 and "unknown field" in r.headers["warning"]


def test_strict_and_default_refuse(http):
    for q in ("", "?fieldValidation=Strict"):
        r = http.post(f"/api/v1/namespaces/default/configmaps{q}", json=CM)
        assert r.status_code == 400 and "dataa" in r.json()["message"]
    assert http.get("/api/v1/namespaces/default/configmaps/c").status_code == 404


def test_unknown_mode_is_refused(http):
    r = http.post("/api/v1/namespaces/default/configmaps?fieldValidation=Lenient", json=CM)
    assert r.status_code == 400 and "fieldValidation: Unsupported value" in r.json()["message"]
    assert http.get("/api/v1/namespaces/default/configmaps/c").status_code == 404
