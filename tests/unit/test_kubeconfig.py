"""Reading a kubeconfig as kubectl does."""
from __future__ import annotations

import pytest
import yaml

from shoal.machinery.client.rest import load_kubeconfig

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("ca, expected", [("ca.crt", "{dir}/ca.crt"), ("sub/ca.crt", "{dir}/sub/ca.crt"),
                                          ("/etc/shoal/ca.crt", "/etc/shoal/ca.crt")])
def test_certificate_authority_path_is_relative_to_the_file(tmp_path, ca, expected):
    cfg = {"apiVersion": "v1", "kind": "Config", "current-context": "c",
           "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:6443", "certificate-authority": ca}}],
           "users": [{"name": "u", "user": {"token": "t"}}],
           "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}]}
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(cfg))
    assert load_kubeconfig(path)["ca_file"] == expected.format(dir=tmp_path)
