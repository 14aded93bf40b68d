"""`--registry-auth FILE` on `shoal agent` and `shoal up`: checked before anything starts."""
from __future__ import annotations

import json
import os
from argparse import Namespace

import pytest

from shoal.cli.cmd_agent import registry_auth_problem
from shoal.cli.main import main

pytestmark = pytest.mark.unit


def auth_file(tmp_path, doc, mode=0o600):
    f = tmp_path / "auth.json"
    f.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    os.chmod(f, mode)
    return f


@pytest.mark.parametrize("doc, fake, problem", [
    ({"auths": {"reg.example.com": {"auth": "Y2k6cHc="}}}, False, None),
    ("{not json", False, "--registry-auth {f}: not valid JSON"),
    ({"auths": {"reg.example.com": {"auth": "%%%"}}}, False, "auth is not base64(username:password)"),
    ({"auths": {}}, True, "--registry-auth: a hollow node (--fake-runtime) pulls no images"),
])
def test_registry_auth_problem(tmp_path, doc, fake, problem):
    f = auth_file(tmp_path, doc)
    got = registry_auth_problem(Namespace(registry_auth=f, fake_runtime=fake))
    if problem is None:
        assert got is None
    else:
        assert got is not None and problem.format(f=f) in got
    assert registry_auth_problem(Namespace(registry_auth=None, fake_runtime=fake)) is None


@pytest.mark.parametrize("command", ["agent", "up"])
def test_a_bad_file_stops_the_command_before_it_starts(tmp_path, capsys, command, monkeypatch):
    monkeypatch.chdir(tmp_path)
    auth_file(tmp_path, "[]")
    argv = [command, "--registry-auth", "auth.json", "--data-dir", str(tmp_path / "data")]
    if command == "agent":
        argv += ["--server", "https://127.0.0.1:1", "--token", "x"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"error: --registry-auth {tmp_path / 'auth.json'}: must be a JSON object, not list" in err
    assert not (tmp_path / "data").exists(), "nothing was started or written"
