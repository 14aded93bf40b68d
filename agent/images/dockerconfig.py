"""Registry credentials in Docker's config format, and which of them an image gets.

One parser for the two places credentials come from:
- a pod's `imagePullSecrets`: Secrets of type `kubernetes.io/dockerconfigjson` (key
  `.dockerconfigjson`, `{"auths": {...}}`) or the legacy `kubernetes.io/dockercfg` (key
  `.dockercfg`, the `auths` map itself) — `keyring_from_pull_secrets`;
- the node's file, `shoal agent --registry-auth FILE` (the `.dockerconfigjson` format, e.g.
  what `docker login` writes to ~/.docker/config.json) — `load_registry_auth`.

An `auths` entry is `{"auth": base64("user:password")}` (padded or not) or
`{"username": ..., "password": ...}`; `auth` wins when both are there, as in kubelet.
`email` is allowed and unused. An entry holding only a token (`identitytoken`,
`registrytoken`) or nothing at all (`docker login` with a `credsStore` writes `{}`) gives
no credentials shoal can send: it is left out with a note saying so, as are top-level
`credsStore`/`credHelpers` (helper programs shoal does not run). A document that is not
JSON, not an object, or has an `auth` that does not decode is a `DockerConfigError`
naming where: a pod's pull then fails (kubelet does the same), the node file stops the
agent at start.

Matching is kubelet's credentialprovider keyring (pkg/credentialprovider/keyring.go):
- a key is normalised to `host[:port][/path]`: the scheme (`https://`, `http://`) is
  dropped, and a path `/v1/…` or `/v2/…` loses that prefix — so Docker Hub's
  `https://index.docker.io/v1/` is `index.docker.io`;
- it matches an image `registry/repository` when the ports are equal, the hosts have the
  same number of dot-separated parts and each part matches as a glob (`*.example.com`),
  and the key's path is a prefix of the image's path — a string prefix, as kubelet's is
  (`reg/team` also matches `reg/team-b/app`);
- every matching credential is returned, the most specific (longest) key first (kubelet
  reverse-sorts the keys); when none matches and the image is on Docker Hub, the
  `index.docker.io` credentials are used;
- a pod's secrets come first, all secrets together in one keyring, then the node's
  (kubelet's `UnionDockerKeyring`); the store tries them in that order and stops at the
  first the registry accepts. With no match at all the pull is anonymous.

Python's `fnmatch` stands in for Go's `filepath.Match` on host labels (they agree for `*`,
`?` and `[...]` on names without `/`).
"""
from __future__ import annotations

import base64
import binascii
import fnmatch
import json
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Sequence

from shoal.agent.images.registry import Credential
from shoal.agent.interfaces import PullSecret

SECRET_TYPE_DOCKER_CONFIG_JSON, DOCKER_CONFIG_JSON_KEY = "kubernetes.io/dockerconfigjson", ".dockerconfigjson"
SECRET_TYPE_DOCKERCFG, DOCKERCFG_KEY = "kubernetes.io/dockercfg", ".dockercfg"
DEFAULT_REGISTRY_HOST = "index.docker.io"
MAX_FILE_BYTES = 1 << 20          # a Secret holds at most 1 MiB; the node file no more


class DockerConfigError(ValueError):
    """A Docker config cannot be read; the message names its source and the entry."""


@dataclass(frozen=True)
class AuthEntry:
    key: str                 # normalised: host[:port][/path]
    credential: Credential


_URL_END = re.compile(r"[/?#]")


def _netloc_path(schemeless: str) -> tuple[str, str]:
    """`host[:port]` and the path of a URL without its scheme (a query or fragment, which
    Go's url.Parse would split off, is no part of either)."""
    m = _URL_END.search(schemeless)
    if m is None:
        return schemeless, ""
    netloc, rest = schemeless[:m.start()], schemeless[m.start():]
    return netloc, rest.split("?", 1)[0].split("#", 1)[0]


def normalize_key(location: str) -> str:
    """kubelet's key for an `auths` location: no scheme, `/v1/` and `/v2/` path prefixes cut,
    a bare `/` path dropped (`https://index.docker.io/v1/` → `index.docker.io`)."""
    for scheme in ("https://", "http://"):
        if location.startswith(scheme):
            location = location[len(scheme):]
            break
    netloc, path = _netloc_path(location)
    if path.startswith(("/v2/", "/v1/")):
        path = path[3:]
    return netloc + path if path and path != "/" else netloc


def _split(schemeless: str) -> tuple[list[str], str, str]:
    """(host labels, port, path) of `host[:port][/path]`, as Go's url.Parse + SplitHostPort."""
    netloc, path = _netloc_path(schemeless)
    host, port = netloc, ""
    if netloc.startswith("["):
        inner, _, rest = netloc[1:].partition("]")
        host, port = inner, rest[1:] if rest.startswith(":") else ""
    elif netloc.count(":") == 1:
        host, port = netloc.split(":")
    return host.split("."), port, path


def url_matches(key: str, image: str) -> bool:
    """kubelet's URLsMatchStr(key, image): equal ports, as many host labels each matching as
    a glob, and the key's path a (string) prefix of the image's."""
    k_labels, k_port, k_path = _split(key)
    i_labels, i_port, i_path = _split(image)
    if k_port != i_port or len(k_labels) != len(i_labels) or not i_path.startswith(k_path):
        return False
    return all(fnmatch.fnmatchcase(il, kl) for kl, il in zip(k_labels, i_labels))


def is_default_registry(image: str) -> bool:
    """Whether `image` (`registry/repository` or a bare repository) pulls from Docker Hub."""
    first, sep, _ = image.partition("/")
    if not first:
        return False
    if not sep or first in ("docker.io", DEFAULT_REGISTRY_HOST):
        return True
    return not any(c in first for c in ".:")


class Keyring:
    """Credentials by normalised location, looked up as kubelet's BasicDockerKeyring does."""

    def __init__(self, entries: Iterable[AuthEntry] = (), notes: Iterable[str] = ()):
        self.entries = list(entries)
        self.notes = list(notes)          # what was left out, and why (for messages)
        self._keys = sorted({e.key for e in self.entries}, reverse=True)    # most specific first

    def __len__(self) -> int:
        return len(self.entries)

    def lookup(self, image: str) -> list[Credential]:
        """Every credential for `image` (`registry/repository`), the most specific key first."""
        out = [e.credential for k in self._keys if url_matches(k, image)
               for e in self.entries if e.key == k]
        if not out and is_default_registry(image):
            out = [e.credential for e in self.entries if e.key == DEFAULT_REGISTRY_HOST]
        return out


def _decode_auth(value: str, where: str) -> tuple[str, str]:
    text = value.strip()
    try:
        raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise DockerConfigError(f"{where}: auth is not base64(username:password)") from None
    user, sep, password = raw.decode("utf-8", "replace").partition(":")
    if not sep:
        raise DockerConfigError(f"{where}: auth must be base64(username:password) (no ':' in it)")
    return user, password


def parse_auths(auths: Any, *, source: str) -> Keyring:
    """The `auths` map of a Docker config (`{location: entry}`) as a Keyring whose credentials
    name `source`."""
    if not isinstance(auths, dict):
        raise DockerConfigError(f"{source}: auths must be a JSON object of registry → credentials, "
                                f"not {type(auths).__name__}")
    entries: list[AuthEntry] = []
    notes: list[str] = []
    for location, entry in auths.items():
        where = f"{source}: auths[{location!r}]"
        if not isinstance(entry, dict):
            raise DockerConfigError(f"{where} must be a JSON object, not {type(entry).__name__}")
        for name in ("auth", "username", "password", "email", "identitytoken", "registrytoken"):
            if name in entry and not isinstance(entry[name], str):
                raise DockerConfigError(f"{where}.{name} must be a string")
        if entry.get("auth"):
            user, password = _decode_auth(entry["auth"], where)
        elif entry.get("username") or entry.get("password"):
            user, password = entry.get("username") or "", entry.get("password") or ""
        else:
            tokens = [t for t in ("identitytoken", "registrytoken") if entry.get(t)]
            notes.append(f"{where} not used: " + (f"{' and '.join(tokens)} is not supported (only "
                                                  "username and password)" if tokens else "no credentials in it"))
            continue
        key = normalize_key(location)
        if not key:
            raise DockerConfigError(f"{where}: not a registry location")
        entries.append(AuthEntry(key, Credential(user, password, source)))
    return Keyring(entries, notes)


def parse_docker_config(raw: bytes, *, source: str, legacy: bool = False) -> Keyring:
    """A `.dockerconfigjson` document (`{"auths": {...}}`), or with `legacy` a `.dockercfg`
    one (the auths map itself). Raises DockerConfigError naming `source`."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise DockerConfigError(f"{source}: not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise DockerConfigError(f"{source}: must be a JSON object, not {type(doc).__name__}")
    if legacy:
        return parse_auths(doc, source=source)
    ring = parse_auths(doc.get("auths", {}), source=source)
    for helper in ("credsStore", "credHelpers"):
        if doc.get(helper):
            ring.notes.append(f"{source}: {helper} not used (shoal runs no credential helpers: put the "
                              f"credentials in auths)")
    return ring


def keyring_from_pull_secrets(secrets: Sequence[PullSecret]) -> Keyring:
    """One keyring of every docker-config Secret a pod names (kubelet's MakeDockerKeyring).
    A Secret of another type holds no registry credentials: it is left out with a note.
    Raises DockerConfigError when one of them cannot be read."""
    entries: list[AuthEntry] = []
    notes: list[str] = []
    for s in secrets:
        source = f"imagePullSecret {s.label}"
        if s.type == SECRET_TYPE_DOCKER_CONFIG_JSON and s.data.get(DOCKER_CONFIG_JSON_KEY):
            ring = parse_docker_config(s.data[DOCKER_CONFIG_JSON_KEY], source=source)
        elif s.type == SECRET_TYPE_DOCKERCFG and s.data.get(DOCKERCFG_KEY):
            ring = parse_docker_config(s.data[DOCKERCFG_KEY], source=source, legacy=True)
        else:
            notes.append(f"{source} not used: its type is {s.type or 'Opaque'}, not "
                         f"{SECRET_TYPE_DOCKER_CONFIG_JSON} or {SECRET_TYPE_DOCKERCFG}")
            continue
        entries += ring.entries
        notes += ring.notes
    return Keyring(entries, notes)


def load_registry_auth(path: Path | str) -> tuple[Keyring, list[str]]:
    """The node's credentials file (`--registry-auth`) and the warnings the agent logs about
    it: group or others may read it (it holds passwords: mode 0600, as docker's own config),
    entries left out, nothing usable. Raises DockerConfigError."""
    path = Path(path)
    source = f"--registry-auth {path}"
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise DockerConfigError(f"{source}: not a regular file")
        if st.st_size > MAX_FILE_BYTES:
            raise DockerConfigError(f"{source}: larger than {MAX_FILE_BYTES} bytes")
        raw = path.read_bytes()
    except OSError as e:
        raise DockerConfigError(f"{source}: cannot be read: {e.strerror or e}") from None
    warnings = []
    if st.st_mode & 0o077:
        warnings.append(f"{path} may be read by users other than its owner (mode {stat.S_IMODE(st.st_mode):04o}) "
                        f"and it holds registry passwords: chmod 600 {path}")
    ring = parse_docker_config(raw, source=source)
    warnings += ring.notes
    if not ring.entries:
        warnings.append(f"{path} holds no usable registry credentials")
    return ring, warnings


def merge(*rings: Keyring) -> Keyring:
    """One keyring answering each ring's lookup in turn (kubelet's UnionDockerKeyring)."""
    return _Union(rings)


class _Union(Keyring):
    def __init__(self, rings: Sequence[Keyring]):
        super().__init__([e for r in rings for e in r.entries], [n for r in rings for n in r.notes])
        self._rings = list(rings)

    def lookup(self, image: str) -> list[Credential]:
        return [c for r in self._rings for c in r.lookup(image)]


__all__ = ["AuthEntry", "DockerConfigError", "Keyring", "keyring_from_pull_secrets", "load_registry_auth",
           "merge", "normalize_key", "parse_auths", "parse_docker_config", "url_matches", "is_default_registry",
           "DEFAULT_REGISTRY_HOST"]
