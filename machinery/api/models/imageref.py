"""Container image references: `[host[:port]/]path[:tag][@algo:hex]`.

The grammar is the Distribution project's reference grammar (what `docker
pull` accepts). `parse_image_reference` splits a reference into its parts or
raises `ValueError` with Docker's wording (`invalid reference format: repository
name must be lowercase`). It does not add the `docker.io/library/` default:
that belongs to whoever pulls (the agent), not to the object model.

Design note: the first path component is a registry host only if it contains
a '.' or ':' or is `localhost` — so `myuser/app` is a Docker Hub path while
`localhost:5000/app` and `registry.example.com/app` name registries. This is
why `host:5000/app` has no tag even though it contains a colon.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_ALNUM = r"[a-z0-9]+"
_SEP = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = re.compile(rf"^{_ALNUM}(?:{_SEP}{_ALNUM})*$")
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = re.compile(rf"^(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?$")
_TAG = re.compile(r"^[\w][\w.-]{0,127}$")
_DIGEST = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}$")
_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
NAME_TOTAL_MAX = 255


@dataclass(frozen=True)
class ImageRef:
    domain: str | None  # "registry.example.com:5000", or None for the default registry
    path: str  # "library/nginx", "team/app"
    tag: str | None
    digest: str | None  # "sha256:<hex>"

    @property
    def repository(self) -> str:
        return f"{self.domain}/{self.path}" if self.domain else self.path

    def __str__(self) -> str:
        out = self.repository
        if self.tag:
            out += f":{self.tag}"
        if self.digest:
            out += f"@{self.digest}"
        return out


def parse_image_reference(ref: str) -> ImageRef:
    """Split an image reference, or raise ValueError naming what is wrong with it."""
    if not isinstance(ref, str) or not ref:
        raise ValueError("invalid reference format: empty image reference")
    if any(c.isspace() for c in ref):
        raise ValueError("invalid reference format: an image reference must not contain whitespace")
    name, digest = ref, None
    if "@" in ref:
        name, digest = ref.split("@", 1)
        if not _DIGEST.match(digest):
            raise ValueError(f"invalid reference format: digest {digest!r} is not of the form "
                             f"<algorithm>:<hex> (e.g. sha256:<64 hex digits>)")
        algo, hexpart = digest.split(":", 1)
        want = _DIGEST_LENGTHS.get(algo)
        if want is not None and len(hexpart) != want:
            raise ValueError(f"invalid checksum digest length: {algo} digests have {want} hex digits, "
                             f"{digest!r} has {len(hexpart)}")
        if want is None:
            raise ValueError(f"unsupported digest algorithm {algo!r} (use sha256, sha384 or sha512)")
    tag = None
    last_slash = name.rfind("/")
    colon = name.rfind(":")
    if colon > last_slash:
        name, tag = name[:colon], name[colon + 1:]
        if not _TAG.match(tag):
            raise ValueError(f"invalid reference format: tag {tag!r} must be 1-128 of [A-Za-z0-9_.-] "
                             f"and may not start with '.' or '-'")
    if not name:
        raise ValueError("invalid reference format: repository name is empty")
    domain, path = None, name
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        domain, path = first, rest
        if not _DOMAIN.match(domain):
            raise ValueError(f"invalid reference format: registry host {domain!r} is not a valid host[:port]")
    if len(name) > NAME_TOTAL_MAX:
        raise ValueError(f"invalid reference format: repository name must not be more than "
                         f"{NAME_TOTAL_MAX} characters")
    for comp in path.split("/"):
        if not _PATH_COMPONENT.match(comp):
            if comp.lower() != comp and _PATH_COMPONENT.match(comp.lower()):
                raise ValueError("invalid reference format: repository name must be lowercase")
            raise ValueError(f"invalid reference format: repository path component {comp!r} must be lowercase "
                             f"letters and digits separated by '.', '_', '__' or '-'")
    return ImageRef(domain=domain, path=path, tag=tag, digest=digest)
