"""What every command handler gets: the parsed flags, output streams, a lazily built client, clocks.

Handlers are `fn(args) -> int | None` with `args.ctx` a `Context`; tests
build one with their own streams and clocks (see `cli.main.main`). Nothing
here is module-level state: a fresh Context per invocation.

Colour: errors are red and warnings yellow (rich) only when stderr is a TTY
and NO_COLOR is unset; otherwise plain text, byte for byte what kubectl
prints. Tables never carry colour, so they can be piped and parsed.

Transport: the client trusts the kubeconfig's `certificate-authority-data` (or
`certificate-authority`) — the cluster CA `shoal server` / `shoal up` put there —
and nothing else. When the server cannot be reached, `unreachable_message` tells
a server that is down from one whose certificate is not trusted or not valid for
the address used, and from an http/https mismatch, each with what to do.
"""
from __future__ import annotations

import os
import ssl
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import IO, Any, Callable
from urllib.parse import urlsplit

from shoal.machinery.client.httpconn import Disconnected
from shoal.machinery.client.rest import Client, load_kubeconfig


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def use_colour(stream: IO[str]) -> bool:
    if os.environ.get("NO_COLOR"):
        return False
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def unreachable_message(server: str, cause: BaseException | None, kubeconfig: str | None) -> str:
    """Why `server` could not be used, from the error under the client's ConnectionFailed (pure)."""
    where = f"cannot reach the API server at {server}"
    kc = kubeconfig or "the kubeconfig"
    if isinstance(cause, ssl.SSLCertVerificationError):
        detail = getattr(cause, "verify_message", "") or str(cause)
        host = urlsplit(server).hostname or server
        if "mismatch" in detail.lower():
            return (f"{where}: its certificate is not valid for {host} ({detail}): restart the server with "
                    f"--tls-san {host} (it issues a new certificate with the same CA), or use an address "
                    f"the certificate names")
        return (f"{where}: its certificate is not signed by the CA in {kc} ({detail}): use the kubeconfig the "
                f"server wrote (shoal server and shoal up rewrite it at every start; the CA is "
                f"<data-dir>/tls/ca.crt)")
    if isinstance(cause, ssl.SSLError) and server.startswith("https://"):
        reason = getattr(cause, "reason", None) or str(cause)
        return (f"{where}: the TLS handshake failed ({reason}); a server started with --insecure-http "
                f"speaks plain HTTP: use the kubeconfig it wrote")
    if isinstance(cause, Disconnected) and server.startswith("http://"):
        return (f"{where}: the server closed the connection without answering; shoal servers serve HTTPS "
                f"unless started with --insecure-http: use the kubeconfig the server wrote (https:// and the "
                f"cluster CA) instead of {kc}")
    return f"{where}: is it running? (shoal up / shoal server)"


@dataclass
class Context:
    kubeconfig: str | None = None
    namespace_flag: str | None = None
    stdout: IO[str] = field(default_factory=lambda: sys.stdout)
    stderr: IO[str] = field(default_factory=lambda: sys.stderr)
    stdin: IO[str] = field(default_factory=lambda: sys.stdin)
    now: Callable[[], datetime] = _utcnow
    monotonic: Callable[[], float] = time.monotonic
    client_factory: Callable[["Context"], Any] | None = None
    _client: Any = None
    _config: dict | None = None

    # -- API access ---------------------------------------------------------------
    def config(self) -> dict:
        if self._config is None:
            self._config = load_kubeconfig(self.kubeconfig)
        return self._config

    def client(self) -> Client:
        if self._client is None:
            if self.client_factory is not None:
                self._client = self.client_factory(self)
            else:
                cfg = self.config()
                c = Client(cfg["server"], cfg.get("token"), ca_file=cfg.get("ca_file"), ca_data=cfg.get("ca_data"),
                           user_agent="shoal-cli")
                c.default_namespace = cfg.get("namespace") or "default"
                self._client = c
        return self._client

    def server_url(self) -> str:
        if self._client is not None:
            return getattr(self._client, "server", "?")
        try:
            return self.config().get("server") or "?"
        except Exception:  # the kubeconfig itself is the problem; reported elsewhere
            return "?"

    def unreachable_message(self, e: BaseException) -> str:
        """The message for a ConnectionFailed `e` (see `unreachable_message`)."""
        try:
            path = self.config().get("path")
        except Exception:  # noqa: BLE001 — the kubeconfig itself is the problem; reported elsewhere
            path = None
        return unreachable_message(self.server_url(), e.__cause__, path)

    def namespace(self) -> str:
        """-n, else the kubeconfig context's namespace, else `default`."""
        if self.namespace_flag:
            return self.namespace_flag
        if self._client is not None and getattr(self._client, "default_namespace", None):
            return self._client.default_namespace
        try:
            return self.config().get("namespace") or "default"
        except FileNotFoundError:
            return "default"

    def close(self) -> None:
        if self._client is not None and hasattr(self._client, "close"):
            self._client.close()
        self._client = None

    # -- output -------------------------------------------------------------------------
    def write(self, text: str) -> None:
        self.stdout.write(text)
        self.stdout.flush()

    def line(self, text: str = "") -> None:
        self.write(text + "\n")

    def _styled(self, text: str, style: str) -> None:
        if use_colour(self.stderr):
            from rich.console import Console
            from rich.text import Text
            Console(file=self.stderr, highlight=False, soft_wrap=True).print(Text(text, style=style))
        else:
            self.stderr.write(text + "\n")
        self.stderr.flush()

    def error(self, message: str) -> None:
        """`error: ...` on stderr, one line per line of message."""
        for ln in message.splitlines() or [""]:
            self._styled(f"error: {ln}", "bold red")

    def warn(self, message: str) -> None:
        self._styled(f"Warning: {message}", "yellow")

    def info(self, message: str) -> None:
        """Progress chatter that is not the command's output (stderr)."""
        self.stderr.write(message + "\n")
        self.stderr.flush()
