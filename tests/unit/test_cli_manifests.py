"""Manifest loading: documents with positions; YAML/JSON errors naming file, document and line."""
from __future__ import annotations

import io

import pytest

from shoal.cli import manifests

pytestmark = pytest.mark.unit

GOOD = """\
# a comment before the first document
apiVersion: v1
kind: Namespace
metadata:
  name: shop
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  replicas: 2
"""


def test_multi_document_positions(tmp_path):
    f = tmp_path / "app.yaml"
    f.write_text(GOOD)
    got = manifests.load([str(f)])
    assert got.errors == []
    assert [(d.index, d.line, d.label) for d in got.documents] == [(1, 1, "Namespace/shop"), (2, 7, "Deployment/web")]
    assert got.documents[1].where() == f"{f}: document 2 (Deployment/web)"


def test_syntax_error_names_file_document_and_file_line_and_keeps_other_documents(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text(GOOD + "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n   bad: indent\n---\n"
                 "apiVersion: v1\nkind: Namespace\nmetadata: {name: after}\n")
    got = manifests.load([str(f)])
    assert [d.label for d in got.documents] == ["Namespace/shop", "Deployment/web", "Namespace/after"]
    assert len(got.errors) == 1
    e = got.errors[0]
    assert (e.source, e.index, e.line) == (str(f), 3, 19)
    assert str(e).startswith(f"{f}: document 3: line 19, column ")
    assert "invalid YAML" in str(e)


def test_empty_and_comment_only_documents_are_skipped_and_not_counted():
    got = manifests.parse_text("---\n# nothing\n---\napiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n...\n",
                               "x.yaml")
    assert [(d.index, d.line) for d in got.documents] == [(1, 4)]


def test_json_file_and_list_expansion_and_stdin(tmp_path):
    f = tmp_path / "o.json"
    f.write_text('{"apiVersion": "v1", "kind": "List", "items": [{"apiVersion": "v1", "kind": "Namespace", '
                 '"metadata": {"name": "a"}}, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "b"}}]}')
    got = manifests.load([str(f)])
    assert [d.label for d in got.documents] == ["Namespace/a", "Namespace/b"]
    bad = tmp_path / "bad.json"
    bad.write_text('{"apiVersion": "v1",\n "kind": }')
    e = manifests.load([str(bad)]).errors[0]
    assert (e.index, e.line) == (1, 2) and "invalid JSON" in e.message
    got = manifests.load(["-"], stdin=io.StringIO(GOOD))
    assert [d.source for d in got.documents] == ["<stdin>", "<stdin>"]
    got = manifests.load(["-"], stdin=io.StringIO('{"apiVersion":"v1","kind":"Namespace","metadata":{"name":"j"}}'))
    assert got.documents[0].label == "Namespace/j"


def test_directory_missing_file_and_non_mapping(tmp_path):
    (tmp_path / "b.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: b}\n")
    (tmp_path / "a.yml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: a}\n")
    (tmp_path / "notes.txt").write_text("ignored")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.yaml").write_text("apiVersion: v1\nkind: Namespace\nmetadata: {name: c}\n")
    assert [d.label for d in manifests.load([str(tmp_path)]).documents] == ["Namespace/a", "Namespace/b"]
    assert [d.label for d in manifests.load([str(tmp_path)], recursive=True).documents] == [
        "Namespace/a", "Namespace/b", "Namespace/c"]
    got = manifests.load([str(tmp_path / "nope.yaml")])
    assert str(got.errors[0]) == f"{tmp_path / 'nope.yaml'}: no such file or directory"
    got = manifests.parse_text("- a\n- b\n", "l.yaml")
    assert "expected a mapping" in str(got.errors[0]) and got.errors[0].index == 1


@pytest.mark.parametrize("obj,problems", [
    ({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"}}, []),
    ({"kind": "Deployment", "metadata": {"name": "web"}}, ["apiVersion: Required value"]),
    ({"apiVersion": "apps/v1", "metadata": {"name": "web"}}, ["kind: Required value"]),
    ({"apiVersion": "apps/v1", "kind": "Deployment"}, ["metadata: Required value"]),
    ({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {}}, ["metadata.name: Required value"]),
    ({"apiVersion": "v1", "kind": "ReplicationController", "metadata": {"name": "s"}},
     ['kind: Unsupported value: "ReplicationController": no such kind is served by shoal']),
    ({"apiVersion": "v1", "kind": "Deployment", "metadata": {"name": "web"}},
     ['apiVersion: Invalid value: "v1": no matches for kind "Deployment" in version "v1" (use "apps/v1")']),
    ({"apiVersion": "apps/v1", "kind": "deployment", "metadata": {"name": "web"}},
     ['kind: Invalid value: "deployment": kinds are spelled "Deployment"']),
])
def test_check_document(obj, problems):
    assert manifests.check_document(manifests.Document("f.yaml", 1, 1, obj)) == problems
