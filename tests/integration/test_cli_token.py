"""`shoal token rotate`: the old token stops working, the kubeconfig gets the new admin token."""
import shutil

import pytest

from shoal.machinery.api import errors
from shoal.machinery.client.rest import Client
from shoal.cli.main import main


def test_rotate_join_and_admin(api, tmp_path, capsys):
    kc = tmp_path / "kubeconfig"
    shutil.copy(api.kubeconfig, kc)
    old_join = api.join_token
    assert main(["token", "rotate", "join", "--kubeconfig", str(kc)]) == 0
    new_join = capsys.readouterr().out.strip().splitlines()[-1]
    assert new_join and new_join != old_join
    with pytest.raises(errors.Unauthorized):
        Client(api.url, old_join).request("POST", "/shoal/v1/join", body={"nodeName": "n1", "nodePassword": "p" * 43})
    assert Client(api.url, new_join).request("POST", "/shoal/v1/join",
                                             body={"nodeName": "n1", "nodePassword": "p" * 43})["token"]

    old_admin = api.admin_token
    assert main(["token", "rotate", "admin", "--kubeconfig", str(kc)]) == 0
    with pytest.raises(errors.Unauthorized):
        Client(api.url, old_admin).list("pods")
    assert Client.from_kubeconfig(kc).list("pods")["items"] == []
