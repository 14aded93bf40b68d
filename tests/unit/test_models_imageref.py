"""shoal.machinery.api.models.imageref: splitting image references the way registries read them."""
import pytest

from shoal.machinery.api.models.imageref import ImageRef, parse_image_reference

pytestmark = pytest.mark.unit
D64 = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize("ref,parts", [
    ("nginx", (None, "nginx", None, None)),
    ("nginx:1.27", (None, "nginx", "1.27", None)),
    ("library/nginx:latest", (None, "library/nginx", "latest", None)),
    ("localhost/app", ("localhost", "app", None, None)),
    ("localhost:5000/app:v1", ("localhost:5000", "app", "v1", None)),
    ("host:5000/app", ("host:5000", "app", None, None)),  # a port, not a tag
    ("127.0.0.1:5000/team/app:v2", ("127.0.0.1:5000", "team/app", "v2", None)),
    ("[::1]:5000/app", ("[::1]:5000", "app", None, None)),
    ("registry.example.com/a/b/c", ("registry.example.com", "a/b/c", None, None)),
    (f"nginx@{D64}", (None, "nginx", None, D64)),
    (f"reg.io/app:v1@{D64}", ("reg.io", "app", "v1", D64)),
    ("my-app_x.y__z:V1.0_b-2", (None, "my-app_x.y__z", "V1.0_b-2", None)),
])
def test_parse(ref, parts):
    r = parse_image_reference(ref)
    assert (r.domain, r.path, r.tag, r.digest) == parts
    assert str(r) == ref


@pytest.mark.parametrize("ref,fragment", [
    ("", "empty image reference"),
    ("Nginx", "repository name must be lowercase"),
    ("team/App:v1", "repository name must be lowercase"),
    ("nginx 1.27", "must not contain whitespace"),
    ("nginx:", "tag ''"),
    ("nginx:-x", "tag '-x'"),
    ("nginx:" + "a" * 129, "tag"),
    ("nginx@sha256:abc", "digest 'sha256:abc'"),
    ("nginx@sha256:" + "a" * 65, "invalid checksum digest length"),
    ("nginx@md5:" + "a" * 32, "unsupported digest algorithm 'md5'"),
    ("a//b", "path component ''"),
    ("-bad/app", "path component '-bad'"),
    ("ho_st:5000/app", "registry host 'ho_st:5000'"),
    ("a" * 256, "must not be more than 255 characters"),
])
def test_rejects(ref, fragment):
    with pytest.raises(ValueError) as e:
        parse_image_reference(ref)
    assert fragment in str(e.value)


def test_repository_property():
    assert parse_image_reference("localhost:5000/app:v1").repository == "localhost:5000/app"
    assert ImageRef(None, "nginx", "1", None).repository == "nginx"
