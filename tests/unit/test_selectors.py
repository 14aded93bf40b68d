"""shoal.machinery.api.selectors: label selector parsing/matching and field selectors."""
import pytest

from shoal.machinery.api.selectors import (check_field_selector, field_matches, field_value, parse_field_selector,
                                           parse_selector, selector_from_label_selector)

pytestmark = pytest.mark.unit

LABELS = {"app": "web", "tier": "frontend", "env": "prod", "n": "5"}


@pytest.mark.parametrize("sel,matches", [
    ("", True),
    ("app=web", True),
    ("app==web", True),
    ("app=db", False),
    ("app!=db", True),
    ("app!=web", False),
    ("missing!=x", True),  # != matches objects without the key
    ("env in (prod,staging)", True),
    ("env in (staging)", False),
    ("env notin (staging)", True),
    ("env notin (prod)", False),
    ("missing notin (prod)", True),
    ("app", True),
    ("missing", False),
    ("!missing", True),
    ("!app", False),
    ("app=web,tier=frontend", True),
    ("app=web,tier=backend", False),
    ("  app = web , env in ( prod , x ) ", True),
    ("n>3", True),
    ("n<3", False),
    ("app>3", False),
    ("app=", False),
    ("empty=", False),
])
def test_label_selector_matches(sel, matches):
    assert parse_selector(sel).matches(LABELS) is matches


def test_empty_value_matches_empty_label():
    assert parse_selector("a=").matches({"a": ""})


@pytest.mark.parametrize("sel,canonical", [
    ("tier!=db,app==web", "app=web,tier!=db"),
    ("env in (b, a),!canary,x", "!canary,env in (a,b),x"),
    ("env notin (z,y)", "env notin (y,z)"),
    ("", ""),
])
def test_canonical_string(sel, canonical):
    s = parse_selector(sel)
    assert str(s) == canonical
    assert parse_selector(str(s)) == s


@pytest.mark.parametrize("bad,fragment", [
    ("a in (", "unclosed '('"),
    ("a in (x", "unclosed '('"),
    ("a)", "unbalanced ')'"),
    ("a=b=c", "'a=b=c'"),
    ("Bad Key=1", "'Bad Key'"),
    ("a=b,", "stray ','"),
    (",a", "stray ','"),
    ("a in ()", "values set can't be empty"),
    ("a=-bad-", "invalid label value '-bad-'"),
    ("a>x", "must be an integer"),
    ("!", "'!'"),
    ("a b", "'a b'"),
])
def test_label_selector_errors(bad, fragment):
    with pytest.raises(ValueError) as e:
        parse_selector(bad)
    assert fragment in str(e.value)


def test_from_label_selector():
    s = selector_from_label_selector({"matchLabels": {"app": "web"}, "matchExpressions": [
        {"key": "env", "operator": "In", "values": ["prod", "staging"]},
        {"key": "canary", "operator": "DoesNotExist"},
        {"key": "tier", "operator": "Exists"},
        {"key": "zone", "operator": "NotIn", "values": ["b"]},
    ]})
    assert str(s) == "app=web,!canary,env in (prod,staging),tier,zone notin (b)"
    assert s.matches(LABELS)
    assert not s.matches({**LABELS, "canary": "1"})
    assert not s.matches({"app": "web", "env": "prod"})  # no tier


def test_empty_and_nil_selectors():
    everything = selector_from_label_selector({})
    assert everything.empty and everything.matches({}) and everything.matches(LABELS)
    nothing = selector_from_label_selector(None)
    assert not nothing.empty and not nothing.matches({}) and not nothing.matches(LABELS)
    assert not parse_selector("app=web").empty


@pytest.mark.parametrize("ls,fragment", [
    ({"matchExpressions": [{"key": "a", "operator": "Equals", "values": ["x"]}]}, "'Equals'"),
    ({"matchExpressions": [{"key": "a", "operator": "In", "values": []}]}, "can't be empty"),
    ({"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]}, "must be empty"),
    ({"matchLabels": {"a b": "x"}}, "'a b'"),
])
def test_from_label_selector_errors(ls, fragment):
    with pytest.raises(ValueError) as e:
        selector_from_label_selector(ls)
    assert fragment in str(e.value)


POD = {"metadata": {"name": "web-1", "namespace": "default"}, "spec": {"nodeName": "n1", "hostNetwork": False},
       "status": {"phase": "Running"}}


@pytest.mark.parametrize("s,parsed", [
    ("spec.nodeName=n1", [("spec.nodeName", "=", "n1")]),
    ("spec.nodeName==n1", [("spec.nodeName", "=", "n1")]),
    ("status.phase!=Failed,metadata.name=web-1", [("status.phase", "!=", "Failed"), ("metadata.name", "=", "web-1")]),
    ("spec.nodeName=", [("spec.nodeName", "=", "")]),
    (r"metadata.name=a\,b\=c\\d", [("metadata.name", "=", "a,b=c\\d")]),
    ("", []),
])
def test_parse_field_selector(s, parsed):
    assert parse_field_selector(s) == parsed


@pytest.mark.parametrize("bad,fragment", [
    ("spec.nodeName", "'spec.nodeName'"),
    ("=x", "invalid field path ''"),
    ("a=b,", "stray ','"),
    ("a=b=c", "unescaped '='"),
    ("a=b\\q", "invalid escape"),
])
def test_field_selector_errors(bad, fragment):
    with pytest.raises(ValueError) as e:
        parse_field_selector(bad)
    assert fragment in str(e.value)


@pytest.mark.parametrize("path,value", [
    ("metadata.name", "web-1"), ("spec.nodeName", "n1"), ("status.phase", "Running"),
    ("spec.hostNetwork", "false"), ("status.podIP", None), ("metadata", None), ("nope.deeper", None),
])
def test_field_value(path, value):
    assert field_value(POD, path) == value


@pytest.mark.parametrize("s,matches", [
    ("spec.nodeName=n1", True), ("spec.nodeName=n2", False), ("spec.nodeName!=n2", True),
    ("status.podIP=", True),  # missing compares as ""
    ("status.podIP!=", False),
    ("metadata.name=web-1,status.phase=Running", True),
    ("metadata.name=web-1,status.phase=Failed", False),
])
def test_field_matches(s, matches):
    assert field_matches(POD, parse_field_selector(s)) is matches


def test_event_involved_object_fields():
    ev = {"involvedObject": {"uid": "u1", "kind": "Deployment", "name": "web", "namespace": "default"}}
    reqs = parse_field_selector("involvedObject.uid=u1,involvedObject.name=web,involvedObject.namespace=default,"
                                "involvedObject.kind=Deployment")
    check_field_selector("Event", reqs)
    assert field_matches(ev, reqs)


def test_check_field_selector_rejects_unsupported():
    check_field_selector("Pod", parse_field_selector("spec.nodeName=n1,status.phase=Running"))
    with pytest.raises(ValueError, match="field label not supported: spec.foo"):
        check_field_selector("Pod", parse_field_selector("spec.foo=x"))
    with pytest.raises(ValueError, match="field label not supported: spec.nodeName"):
        check_field_selector("Deployment", parse_field_selector("spec.nodeName=x"))
