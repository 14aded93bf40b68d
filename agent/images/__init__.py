"""Images for the node agent: pull by digest, verify, unpack safely, share layers.

A tour, in the order a pull goes through it:

- `agent.images.reference` — `parse_reference("127.0.0.1:5000/web:v1")` → `Reference`
  (registry, repository, tag, digest) with Docker's defaults (`busybox` is
  `docker.io/library/busybox:latest`). Bad names raise ImagePullError(InvalidImageName).
- `agent.images.registry` — `RegistryClient`: the Distribution API v2 on httpx. Resolves a
  reference to a verified manifest (an index picks linux/amd64), streams blobs, and handles
  anonymous, basic and bearer-token auth, insecure (http) registries and mirrors.
- `agent.images.unpack` — `unpack_layer(blob, dest, layer=digest)`: safe extraction of a
  gzip or plain tar into a directory overlayfs can use (no escapes, no devices, whiteouts
  in overlayfs form), atomically: the directory exists only once complete.
- `agent.images.store` — `LocalImageStore(root)`, the `agent.interfaces.ImageStore`: a
  content-addressed store (blobs, unpacked layers, image records, tag refs) with
  `pull(ref, policy=..., progress=...)`, `lookup`, `gc(in_use)` and
  `import_archive(path)` for OCI layouts and `docker save` tarballs.

The worker only sees `ImageStore.pull` → `PulledImage` (digest, imageID, layer dirs,
config). See docs/images.md for the on-disk layout and the extraction rules.
"""
from shoal.agent.images.reference import Reference, parse_reference
from shoal.agent.images.registry import RegistryClient, RegistryError
from shoal.agent.images.store import LocalImageStore
from shoal.agent.images.unpack import LayerError, UnsafeLayerError, unpack_layer

__all__ = ["LocalImageStore", "RegistryClient", "RegistryError", "Reference", "parse_reference",
           "LayerError", "UnsafeLayerError", "unpack_layer"]
