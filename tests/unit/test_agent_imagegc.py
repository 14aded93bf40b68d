"""Image GC keeps what any container (running or exited) was made from."""
from types import SimpleNamespace

import pytest

from shoal.agent.imagegc import collect_images, images_in_use

pytestmark = pytest.mark.unit


def test_images_in_use():
    states = [SimpleNamespace(labels={"shoal.io/image-id": "reg/web@sha256:aa"}),
              SimpleNamespace(labels={"shoal.io/image-id": "no-digest"}),
              SimpleNamespace(labels=None)]
    assert images_in_use(states) == {"sha256:aa"}


def test_collect_images_hands_the_digests_in_use_to_the_store():
    kept = []
    runtime = SimpleNamespace(list=lambda: [SimpleNamespace(labels={"shoal.io/image-id": "reg/db@sha256:bb"})])
    images = SimpleNamespace(gc=lambda in_use: kept.append(in_use) or ["sha256:old"])
    assert collect_images(runtime, images, node_name="n1") == ["sha256:old"]
    assert kept == [{"sha256:bb"}]
