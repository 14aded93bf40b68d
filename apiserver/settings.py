"""Settings of one API server process (no module-level state: passed to `create_app`)."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


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
    tls: bool = False                   # serve HTTPS with the generated CA (off only on loopback)
    tls_sans: list[str] = field(default_factory=list)
    version: str = "v1.32.0-shoal"

    def datastore_url(self) -> str:
        return self.datastore or f"sqlite:///{Path(self.data_dir) / 'state.db'}"
