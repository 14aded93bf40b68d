"""Settings of one API server process (no module-level state: passed to `create_app`).

TLS is the default, as in k3s: `tls=True` serves HTTPS with the generated CA
(`apiserver.tls`). Plain HTTP (`tls=False`) exists for loopback development and the
test kits only: constructing `Settings(tls=False)` with a listen host that is not a
loopback address raises `PlainHttpRefused`, so no caller can put an unencrypted,
token-carrying API on a network by accident. Real clients agree: kubectl and the
Python `kubernetes` client never send a bearer token over `http://`.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path


class PlainHttpRefused(ValueError):
    """Plain HTTP was asked for on a listen address other hosts can reach."""


def is_loopback_host(host: str) -> bool:
    """True for `localhost` and any loopback address (127.0.0.0/8, ::1); False for wildcards
    (0.0.0.0, ::), other addresses and other names (a name may resolve to anything)."""
    h = host.strip().strip("[]")
    if h.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(h)
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def plain_http_refusal(listen_host: str) -> str | None:
    """Why plain HTTP may not be served on `listen_host`, or None when it may (pure)."""
    if is_loopback_host(listen_host):
        return None
    shown = listen_host or "0.0.0.0"
    return (f"plain HTTP is only served on a loopback address (127.0.0.1, ::1, localhost), not on {shown}: "
            f"drop --insecure-http to serve HTTPS with the cluster CA (the default)")


@dataclass
class Settings:
    data_dir: Path = Path("/var/lib/shoal/server")
    datastore: str = ""                 # SQLAlchemy URL; default sqlite:///<data_dir>/state.db
    listen_host: str = "127.0.0.1"
    listen_port: int = 6443
    compaction_interval: float = 60.0   # seconds between compactions
    compaction_keep: float = 300.0      # seconds of history kept for watchers to resume from
    sqlite_synchronous: str = "full"    # PRAGMA synchronous; "normal" may lose acknowledged writes on power loss
    event_ttl: float = 3600.0           # seconds an Event lives after its last occurrence (Kubernetes: 1 h); 0 keeps them
    event_ttl_interval: float = 60.0    # seconds between sweeps of expired Events
    watch_poll_interval: float = 0.5    # how often the log is polled for other processes' writes
    bookmark_interval: float = 5.0      # idle time after which a bookmark is sent (allowWatchBookmarks)
    max_watch_seconds: float = 1800.0
    request_threads: int = 8            # threads running request handlers (store calls)
    tls: bool = True                    # HTTPS with the generated CA; False (plain HTTP) only on loopback
    tls_sans: list[str] = field(default_factory=list)
    pod_security: str = "privileged"    # enforce level of namespaces without a pod-security label
    service_cidr: str = "10.43.0.0/16"  # cluster IPs of Services (k3s' default; apiserver.allocation)
    service_node_port_range: str = "30000-32767"   # node ports of NodePort/LoadBalancer Services
    node_event_qps: float = 50.0        # Events a node may write per second (auth.NodeAdmission; kubelet's default)
    node_event_burst: int = 100         # ... and at once
    version: str = "v1.32.0-shoal"

    def __post_init__(self) -> None:
        if not self.tls:
            why = plain_http_refusal(self.listen_host)
            if why:
                raise PlainHttpRefused(why)

    def datastore_url(self) -> str:
        return self.datastore or f"sqlite:///{Path(self.data_dir) / 'state.db'}"
