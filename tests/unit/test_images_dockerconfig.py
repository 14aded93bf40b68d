"""Docker config credentials (agent.images.dockerconfig): parsing, kubelet's key matching,
the pod's secrets and the node's file."""
from __future__ import annotations

import base64
import json
import os

import pytest

from shoal.agent.images.dockerconfig import (DockerConfigError, Keyring, is_default_registry,
                                             keyring_from_pull_secrets, load_registry_auth, merge, normalize_key,
                                             parse_auths, parse_docker_config, url_matches)
from shoal.agent.interfaces import PullSecret

pytestmark = pytest.mark.unit


def b64(s: str) -> str:
    return base64.b64encode(s.encode()).decode()


def config(auths: dict, **top) -> bytes:
    return json.dumps({"auths": auths, **top}).encode()


def users(creds) -> list[str]:
    return [c.username for c in creds]


# ------------------------------------------------------------------ keys and matching (kubelet's keyring.go)
@pytest.mark.parametrize("location, key", [
    ("reg.example.com", "reg.example.com"),
    ("https://reg.example.com", "reg.example.com"),
    ("http://reg.example.com/", "reg.example.com"),
    ("reg.example.com:5000", "reg.example.com:5000"),
    ("https://reg.example.com:5000/v2/", "reg.example.com:5000"),
    ("https://index.docker.io/v1/", "index.docker.io"),
    ("reg.example.com/team", "reg.example.com/team"),
    ("https://reg.example.com/v2/team/app", "reg.example.com/team/app"),
    ("reg.example.com/v3/x", "reg.example.com/v3/x"),            # only /v1/ and /v2/ are cut
    ("*.example.com", "*.example.com"),
    ("127.0.0.1:5000", "127.0.0.1:5000"),
    ("[::1]:5000", "[::1]:5000"),
])
def test_normalize_key(location, key):
    assert normalize_key(location) == key


@pytest.mark.parametrize("key, image, ok", [
    ("reg.example.com", "reg.example.com/app", True),
    ("reg.example.com", "reg.example.com/team/app", True),
    ("reg.example.com", "other.example.com/app", False),
    ("reg.example.com", "reg.example.com:5000/app", False),          # ports must be equal
    ("reg.example.com:5000", "reg.example.com/app", False),
    ("reg.example.com:5000", "reg.example.com:5000/app", True),
    ("reg.example.com/team", "reg.example.com/team/app", True),      # a path prefix
    ("reg.example.com/team", "reg.example.com/other/app", False),
    ("reg.example.com/team", "reg.example.com/team-b/app", True),    # a string prefix, as kubelet's
    ("*.example.com", "reg.example.com/app", True),                  # a glob per host label
    ("*.example.com", "a.reg.example.com/app", False),               # ... as many labels
    ("*.example.com", "example.com/app", False),
    ("reg[0-9].example.com", "reg1.example.com/app", True),
    ("reg?.example.com", "reg1.example.com/app", False),             # '?' starts a URL query, as in Go
    ("127.0.0.1:5000", "127.0.0.1:5000/web", True),
    ("127.0.0.1:5000", "127.0.0.1:5001/web", False),
    ("[::1]:5000", "[::1]:5000/web", True),
    ("index.docker.io", "docker.io/library/busybox", False),         # Docker Hub: by the fallback below
])
def test_url_matches(key, image, ok):
    assert url_matches(key, image) is ok


@pytest.mark.parametrize("image, hub", [
    ("docker.io/library/busybox", True), ("index.docker.io/user/app", True), ("busybox", True),
    ("user/app", True), ("localhost/app", True),     # kubelet's rule: no '.' or ':' in the first part
    ("reg.example.com/app", False), ("127.0.0.1:5000/app", False), ("", False),
])
def test_is_default_registry(image, hub):
    assert is_default_registry(image) is hub


def ring(auths: dict, source: str = "s") -> Keyring:
    return parse_auths({k: {"username": v, "password": "pw"} for k, v in auths.items()}, source=source)


@pytest.mark.parametrize("auths, image, expected", [
    ({"reg.example.com": "host"}, "reg.example.com/team/app", ["host"]),
    # every match, the most specific key first (kubelet reverse-sorts its index)
    ({"reg.example.com": "host", "reg.example.com/team": "team", "reg.example.com/team/app": "app"},
     "reg.example.com/team/app", ["app", "team", "host"]),
    ({"reg.example.com": "host", "reg.example.com/team": "team"}, "reg.example.com/other/app", ["host"]),
    ({"https://index.docker.io/v1/": "hub"}, "docker.io/library/busybox", ["hub"]),
    ({"docker.io": "hub2"}, "docker.io/library/busybox", ["hub2"]),
    ({"https://index.docker.io/v1/": "hub"}, "reg.example.com/app", []),
    ({"reg.example.com:5000": "port"}, "reg.example.com/app", []),
    ({"*.example.com": "glob", "reg.example.com": "exact"}, "reg.example.com/app", ["exact", "glob"]),
    ({}, "reg.example.com/app", []),
])
def test_keyring_lookup(auths, image, expected):
    assert users(ring(auths).lookup(image)) == expected


def test_two_locations_normalising_to_one_key_keep_both_credentials():
    r = parse_auths({"https://reg.example.com": {"username": "a", "password": "1"},
                     "reg.example.com": {"username": "b", "password": "2"}}, source="s")
    assert users(r.lookup("reg.example.com/app")) == ["a", "b"]


def test_merge_answers_the_pods_ring_before_the_nodes():
    pod = ring({"reg.example.com/team": "pod"})
    node = ring({"reg.example.com/team/app": "node-specific", "reg.example.com": "node"})
    assert users(merge(pod, node).lookup("reg.example.com/team/app")) == ["pod", "node-specific", "node"]


# ------------------------------------------------------------------ entries
@pytest.mark.parametrize("entry, user, password", [
    ({"auth": b64("ci:s3cret")}, "ci", "s3cret"),
    ({"auth": b64("ci:s3cret").rstrip("=")}, "ci", "s3cret"),            # unpadded, as kubelet accepts
    ({"auth": b64("ci:pass:with:colons")}, "ci", "pass:with:colons"),
    ({"username": "u", "password": "p"}, "u", "p"),
    ({"username": "u", "password": "p", "auth": b64("a:b")}, "a", "b"),    # auth wins
    ({"auth": b64("ci:pw"), "email": "ci@example.com"}, "ci", "pw"),
])
def test_entries(entry, user, password):
    (cred,) = parse_docker_config(config({"reg.example.com": entry}), source="secret x").lookup("reg.example.com/a")
    assert (cred.username, cred.password, cred.source) == (user, password, "secret x")
    assert password not in repr(cred)


@pytest.mark.parametrize("raw, why", [
    (b"{", "not valid JSON"),
    (b"[]", "must be a JSON object, not list"),
    (json.dumps({"auths": []}).encode(), "auths must be a JSON object"),
    (config({"reg": "x"}), r"auths\['reg'\] must be a JSON object, not str"),
    (config({"reg": {"auth": "!!!"}}), r"auths\['reg'\]: auth is not base64\(username:password\)"),
    (config({"reg": {"auth": b64("no-colon")}}), r"no ':' in it"),
    (config({"reg": {"auth": 7}}), r"auths\['reg'\].auth must be a string"),
    (config({"reg": {"username": ["u"]}}), r"auths\['reg'\].username must be a string"),
])
def test_unreadable_configs_name_the_source_and_entry(raw, why):
    with pytest.raises(DockerConfigError, match=r"^secret default/x: .*" + why):
        parse_docker_config(raw, source="secret default/x")


def test_entries_without_usable_credentials_are_left_out_with_a_note():
    r = parse_docker_config(config({"a.example.com": {}, "b.example.com": {"identitytoken": "t"},
                                    "c.example.com": {"auth": b64("u:p")}}, credsStore="desktop"), source="f")
    assert [e.key for e in r.entries] == ["c.example.com"]
    assert r.notes == ["f: auths['a.example.com'] not used: no credentials in it",
                       "f: auths['b.example.com'] not used: identitytoken is not supported (only username and "
                       "password)",
                       "f: credsStore not used (shoal runs no credential helpers: put the credentials in auths)"]


def test_legacy_dockercfg_is_the_auths_map_itself():
    r = parse_docker_config(json.dumps({"reg.example.com": {"auth": b64("u:p")}}).encode(), source="s", legacy=True)
    assert users(r.lookup("reg.example.com/app")) == ["u"]


# ------------------------------------------------------------------ a pod's secrets
def secret(name: str, type_: str, data: dict[str, bytes]) -> PullSecret:
    return PullSecret("default", name, type_, data)


def test_pull_secrets_of_both_docker_types_make_one_keyring():
    r = keyring_from_pull_secrets([
        secret("json", "kubernetes.io/dockerconfigjson",
               {".dockerconfigjson": config({"reg.example.com": {"auth": b64("j:1")}})}),
        secret("cfg", "kubernetes.io/dockercfg",
               {".dockercfg": json.dumps({"reg.example.com/team": {"auth": b64("c:2")}}).encode()}),
        secret("opaque", "Opaque", {"password": b"x"}),
    ])
    creds = r.lookup("reg.example.com/team/app")
    assert [(c.username, c.source) for c in creds] == [("c", "imagePullSecret default/cfg"),
                                                       ("j", "imagePullSecret default/json")]
    assert r.notes == ["imagePullSecret default/opaque not used: its type is Opaque, not "
                       "kubernetes.io/dockerconfigjson or kubernetes.io/dockercfg"]


def test_an_unreadable_pull_secret_is_an_error_naming_it():
    bad = secret("bad", "kubernetes.io/dockerconfigjson", {".dockerconfigjson": b"not json"})
    with pytest.raises(DockerConfigError, match="imagePullSecret default/bad: not valid JSON"):
        keyring_from_pull_secrets([bad])


# ------------------------------------------------------------------ the node's file
def test_node_file_mode_and_contents(tmp_path):
    f = tmp_path / "auth.json"
    f.write_bytes(config({"https://reg.example.com/v1/": {"auth": b64("node:pw")}}))
    os.chmod(f, 0o600)
    r, warnings = load_registry_auth(f)
    assert warnings == [] and [(c.username, c.source) for c in r.lookup("reg.example.com/x")] == \
        [("node", f"--registry-auth {f}")]
    os.chmod(f, 0o644)
    assert load_registry_auth(f)[1] == [f"{f} may be read by users other than its owner (mode 0644) and it holds "
                                        f"registry passwords: chmod 600 {f}"]


@pytest.mark.parametrize("content, why", [
    (None, "cannot be read: No such file or directory"),
    (b"{}", None),
    (b'{"auths": 1}', "auths must be a JSON object"),
])
def test_node_file_problems(tmp_path, content, why):
    f = tmp_path / "auth.json"
    if content is not None:
        f.write_bytes(content)
        os.chmod(f, 0o600)
    if why is None:
        r, warnings = load_registry_auth(f)
        assert len(r) == 0 and warnings == [f"{f} holds no usable registry credentials"]
        return
    with pytest.raises(DockerConfigError, match=f"--registry-auth {f}: {why}"):
        load_registry_auth(f)


def test_node_file_that_is_a_directory(tmp_path):
    with pytest.raises(DockerConfigError, match="not a regular file"):
        load_registry_auth(tmp_path)

