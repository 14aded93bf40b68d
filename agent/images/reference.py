"""Image references: parse `[registry/]repo[:tag][@sha256:hex]` with Docker's rules.

Contract: `parse_reference(text)` returns a fully-qualified `Reference` or raises
`ImagePullError(reason="InvalidImageName")` naming the text and what is wrong.

Rules (the ones `docker pull` and the kubelet follow, see distribution/reference):
- The first path component is a registry host when it contains `.` or `:`, is
  `localhost`, or has upper-case letters; otherwise the registry is `docker.io`.
- On `docker.io`, a one-component name gets `library/` (`busybox` → `docker.io/library/busybox`).
  `index.docker.io` is the same registry.
- No tag and no digest means `:latest`. With a digest the digest wins; a tag next to
  it is kept for display only.
- Repository components are lower-case `[a-z0-9]` separated by `.`, `_`, `__` or
  dashes; tags are `[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}`; only sha256 digests are accepted
  (every blob is verified with sha256, so another algorithm could not be verified).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from shoal.agent.interfaces import ImagePullError

DOCKER_HUB = "docker.io"
DOCKER_HUB_ENDPOINT = "https://registry-1.docker.io"

_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*\Z")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}\Z")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}\Z")
_HOST = re.compile(
    r"(?:(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9])"
    r"(?:\.(?:[A-Za-z0-9]|[A-Za-z0-9][A-Za-z0-9-]*[A-Za-z0-9]))*"
    r"|\[[0-9A-Fa-f:.]+\])(?::[0-9]+)?\Z")


@dataclass(frozen=True)
class Reference:
    registry: str            # "docker.io", "127.0.0.1:5000"
    repository: str          # "library/busybox", "web"
    tag: str | None = None
    digest: str | None = None

    @property
    def name(self) -> str:
        """`registry/repository`, the prefix of an imageID."""
        return f"{self.registry}/{self.repository}"

    @property
    def pull_key(self) -> str:
        """What the registry is asked for: the digest if any, else the tag."""
        return self.digest or self.tag or "latest"

    @property
    def tagged(self) -> str | None:
        """`registry/repository:tag` when the reference resolves through a tag (no digest)."""
        if self.digest is not None or self.tag is None:
            return None
        return f"{self.name}:{self.tag}"

    def with_digest(self, digest: str) -> "Reference":
        return Reference(self.registry, self.repository, self.tag, digest)

    def __str__(self) -> str:
        out = self.name
        if self.tag is not None:
            out += f":{self.tag}"
        if self.digest is not None:
            out += f"@{self.digest}"
        return out


def _invalid(text: str, why: str) -> ImagePullError:
    return ImagePullError(text, f"invalid image reference {text!r}: {why}", reason="InvalidImageName")


def parse_reference(text: str) -> Reference:
    if not isinstance(text, str) or not text:
        raise _invalid(str(text), "empty")
    if text != text.strip() or any(c.isspace() for c in text):
        raise _invalid(text, "contains whitespace")
    name, digest = text, None
    if "@" in text:
        name, _, digest = text.partition("@")
        if not _DIGEST.match(digest):
            raise _invalid(text, f"digest {digest!r} is not sha256:<64 lower-case hex>")
    tag = None
    colon, slash = name.rfind(":"), name.rfind("/")
    if colon > slash:
        name, tag = name[:colon], name[colon + 1:]
        if not _TAG.match(tag):
            raise _invalid(text, f"tag {tag!r} is not valid")
    first, sep, rest = name.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        registry, path = first, rest
        if not _HOST.match(registry):
            raise _invalid(text, f"registry host {registry!r} is not valid")
    else:
        registry, path = DOCKER_HUB, name
    if registry == "index.docker.io":
        registry = DOCKER_HUB
    if registry == DOCKER_HUB and "/" not in path:
        path = f"library/{path}"
    if not path:
        raise _invalid(text, "no repository name")
    for component in path.split("/"):
        if not _COMPONENT.match(component):
            raise _invalid(text, f"repository component {component!r} must be lower-case "
                                 "letters and digits separated by '.', '_', '__' or '-'")
    if len(registry) + 1 + len(path) > 255:
        raise _invalid(text, "name longer than 255 characters")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(registry=registry, repository=path, tag=tag, digest=digest)
