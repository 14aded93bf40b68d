"""A real API server for tests: uvicorn in a thread, loopback, temp SQLite file.

    with start_test_server(tmp_path) as srv:
        c = srv.client()
        c.create("namespaces", {...})

`start_test_server(tmp_path, controllers=False, **settings)`; the handle has
`url`, `admin_token`, `join_token`, `kubeconfig` (a file for the admin),
`client()`, `store`, `app`, `stop()`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from .server import ServerProcess
from .settings import Settings


def start_test_server(tmp_path: Path, *, controllers: bool = False, controller_options: Any = None,
                      **settings: Any) -> ServerProcess:
    data = Path(tmp_path) / "server"
    kw = dict(data_dir=data, listen_host="127.0.0.1", listen_port=0, watch_poll_interval=0.2,
              bookmark_interval=1.0)
    kw.update(settings)
    s = Settings(**kw)
    srv = ServerProcess(s, kubeconfig_paths=[data / "admin.kubeconfig"])
    srv.kubeconfig = data / "admin.kubeconfig"
    srv.start(controllers=controllers, controller_options=controller_options)
    return srv
