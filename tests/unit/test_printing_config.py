"""`get configmaps` and `get secrets` print kubectl's columns (the CLI and the server's Tables)."""
from datetime import datetime, timezone

import pytest

from shoal.cli.printers import render_table

pytestmark = pytest.mark.unit

NOW = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
MD = {"creationTimestamp": "2024-05-01T11:55:00Z"}


def test_configmap_columns_count_data_and_binary_data():
    out = render_table("ConfigMap", [
        {"metadata": {"name": "app", **MD}, "data": {"a": "1", "b": "2"}, "binaryData": {"c": "AA=="}},
        {"metadata": {"name": "empty", **MD}}], NOW)
    assert out.splitlines() == ["NAME    DATA   AGE", "app     3      5m", "empty   0      5m"]


def test_secret_columns():
    out = render_table("Secret", [
        {"metadata": {"name": "reg", **MD}, "type": "kubernetes.io/dockerconfigjson",
         "data": {".dockerconfigjson": "e30="}},
        {"metadata": {"name": "db", **MD}, "type": "Opaque", "data": {"user": "YQ==", "password": "Yg=="}}], NOW)
    assert out.splitlines() == ["NAME   TYPE                             DATA   AGE",
                                "reg    kubernetes.io/dockerconfigjson   1      5m",
                                "db     Opaque                           2      5m"]
