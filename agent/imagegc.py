"""Image garbage collection: images and layers no container uses any more.

Every `image_gc_interval` the agent asks the runtime which image digests its containers
(running or exited, whatever pod they belong to) were made from — the `shoal.io/image-id`
label, `<repo>@<digest>` — and lets `ImageStore.gc` remove everything else.
"""
from __future__ import annotations

import logging
from typing import Iterable

from shoal.agent.plan import LABEL_IMAGE_ID

log = logging.getLogger(__name__)


def images_in_use(states: Iterable) -> set[str]:
    """The image digests the containers `states` (ContainerState) were made from."""
    in_use = set()
    for s in states:
        iid = (s.labels or {}).get(LABEL_IMAGE_ID, "")
        if "@" in iid:
            in_use.add(iid.split("@", 1)[1])
    return in_use


def collect_images(runtime, images, *, node_name: str = "") -> list:
    """Remove what no container uses; returns what `ImageStore.gc` removed."""
    removed = images.gc(images_in_use(runtime.list()))
    if removed:
        log.info("node %s: image GC removed %d images/layers", node_name, len(removed))
    return removed
