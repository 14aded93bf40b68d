"""Token rotation survives a crash at any step and never revives a rotated-away token."""
from __future__ import annotations

from pathlib import Path

import pytest

from shoal.apiserver import auth
from shoal.apiserver.store import Store

pytestmark = pytest.mark.unit


@pytest.fixture
def env(tmp_path: Path):
    store = Store(f"sqlite:///{tmp_path / 'state.db'}")
    yield store, tmp_path
    store.close()


def valid(store: Store, tok: str, role: str = "admin") -> bool:
    return store.lookup_credential(auth.token_hash(tok)) == (role, "")


def test_rotation_replaces_the_token(env):
    store, d = env
    old = auth.bootstrap_tokens(store, d)["admin"]
    new = auth.rotate_token(store, d, "admin")
    assert (d / "admin-token").read_text().strip() == new and not (d / "admin-token.new").exists()
    assert valid(store, new) and not valid(store, old)
    assert auth.bootstrap_tokens(store, d)["admin"] == new and not valid(store, old)


def test_crash_before_the_database_swap_keeps_the_old_token(env, monkeypatch):
    store, d = env
    old = auth.bootstrap_tokens(store, d)["admin"]
    monkeypatch.setattr(store, "replace_credentials", lambda *a, **k: (_ for _ in ()).throw(SystemExit("crash")))
    with pytest.raises(SystemExit):
        auth.rotate_token(store, d, "admin")
    pending = (d / "admin-token.new").read_text().strip()
    monkeypatch.undo()
    assert auth.bootstrap_tokens(store, d)["admin"] == old
    assert valid(store, old) and not valid(store, pending) and not (d / "admin-token.new").exists()


def test_crash_after_the_swap_finishes_the_rotation(env, monkeypatch):
    store, d = env
    old = auth.bootstrap_tokens(store, d)["admin"]
    real_replace = auth.os.replace
    calls = []

    def crash_on_rename(src, dst):
        if str(src).endswith("admin-token.new"):
            calls.append(src)
            raise SystemExit("crash")
        return real_replace(src, dst)

    monkeypatch.setattr(auth.os, "replace", crash_on_rename)
    with pytest.raises(SystemExit):
        auth.rotate_token(store, d, "admin")
    monkeypatch.undo()
    assert calls and (d / "admin-token").read_text().strip() == old     # the file still names the old one
    new = auth.bootstrap_tokens(store, d)["admin"]
    assert new != old and valid(store, new) and not valid(store, old)    # ...which is not revived
    assert (d / "admin-token").read_text().strip() == new


def test_a_stale_file_is_never_revived(env):
    store, d = env
    old = auth.bootstrap_tokens(store, d)["admin"]
    auth.rotate_token(store, d, "admin")
    (d / "admin-token").write_text(old + "\n")          # e.g. restored from a backup
    fresh = auth.bootstrap_tokens(store, d)["admin"]
    assert fresh != old and not valid(store, old) and valid(store, fresh)


def test_join_token_rotation_keeps_the_pin_format(env):
    store, d = env
    auth.bootstrap_tokens(store, d)
    tok = auth.rotate_token(store, d, "join")
    secret = auth.split_join_token(tok)[1]
    assert valid(store, secret, "join")


def test_node_credentials_are_replaced_in_one_step(env):
    store, _ = env
    a = auth.issue_node_credential(store, "n1")
    b = auth.issue_node_credential(store, "n1")
    c = auth.issue_node_credential(store, "n2")
    assert store.lookup_credential(auth.token_hash(a)) is None
    assert store.lookup_credential(auth.token_hash(b)) == ("node", "n1")
    assert store.lookup_credential(auth.token_hash(c)) == ("node", "n2")
