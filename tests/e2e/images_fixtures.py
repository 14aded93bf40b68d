"""Test images and a loopback registry: re-exported from `shoal.testkit.images`,
which the demo (`scripts/demo.sh`) uses too."""
from shoal.testkit.images import *  # noqa: F401,F403
from shoal.testkit.images import (BUSYBOX, DOCKER_REGISTRY, RegistryHandle, TestImage, TokenAuthServer,
                                  build_test_images, cached_test_images, free_port, push_all, push_image,
                                  start_registry, write_docker_save, write_layout, write_oci_archive)
