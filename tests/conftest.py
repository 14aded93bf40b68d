"""Test tiers by folder: tests/unit (no root), tests/integration (real API server on a temp
SQLite file), tests/e2e (root: real registry, runc, network namespaces)."""
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_collection_modifyitems(config, items):
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        tier = parts[0] if parts else ""
        if tier in ("unit", "integration", "e2e"):
            item.add_marker(getattr(pytest.mark, tier))
        if tier == "e2e" and os.geteuid() != 0:
            item.add_marker(pytest.mark.skip(reason="e2e tests need root"))


@pytest.fixture
def api(tmp_path):
    """A real API server (no controllers) on a temp SQLite file."""
    from shoal.testkit.apiserver import start_test_server
    srv = start_test_server(tmp_path)
    try:
        yield srv
    finally:
        srv.stop()
