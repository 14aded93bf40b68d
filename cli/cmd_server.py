"""`shoal server` (API server + controllers) and `shoal controller` (controllers alone)."""
from __future__ import annotations

import argparse
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = Path("/var/lib/shoal/server")


def default_kubeconfig() -> Path:
    return Path(os.environ.get("KUBECONFIG") or Path.home() / ".shoal" / "kubeconfig")


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit():
        raise argparse.ArgumentTypeError(f"--listen {value!r}: expected HOST:PORT, e.g. 127.0.0.1:6443")
    return host.strip("[]") or "0.0.0.0", int(port)


INSECURE_HTTP_HELP = ("serve plain HTTP instead of HTTPS, only on a loopback --listen address (refused "
                      "elsewhere). Only shoal's own CLI and agents use it: kubectl and the Python kubernetes "
                      "client never send a token over plain HTTP")


class _NoTls(argparse.Action):
    """`--no-tls` used to turn TLS off; TLS is now always on unless `--insecure-http`, which
    says what it does and is loopback-only. Refuse the old flag with the new one's name
    rather than keep two spellings of one switch."""

    def __init__(self, option_strings, dest, **kw):
        super().__init__(option_strings, dest, nargs=0, help=argparse.SUPPRESS)

    def __call__(self, parser, namespace, values, option_string=None):
        parser.error("--no-tls was replaced by --insecure-http (plain HTTP, on a loopback --listen address "
                     "only): HTTPS with the cluster CA is the default")


def _service_cidr(value: str) -> str:
    from shoal.machinery.api.services import parse_service_cidr
    try:
        return str(parse_service_cidr(value))
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _node_port_range(value: str) -> str:
    from shoal.machinery.api.services import parse_node_port_range
    try:
        first, last = parse_node_port_range(value)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return f"{first}-{last}"


def add_service_flags(p: argparse.ArgumentParser) -> None:
    """`--service-cidr` and `--service-node-port-range` (k3s' and Kubernetes' flags and defaults)."""
    from shoal.machinery.api.services import DEFAULT_NODE_PORT_RANGE, DEFAULT_SERVICE_CIDR
    p.add_argument("--service-cidr", type=_service_cidr, default=DEFAULT_SERVICE_CIDR, metavar="CIDR",
                   help=f"IPv4 range of Services' cluster IPs; its first address is reserved for the kubernetes "
                        f"Service (default {DEFAULT_SERVICE_CIDR}; /12 to /28)")
    p.add_argument("--service-node-port-range", type=_node_port_range, default=DEFAULT_NODE_PORT_RANGE,
                   metavar="FIRST-LAST", help=f"ports of NodePort and LoadBalancer Services "
                                              f"(default {DEFAULT_NODE_PORT_RANGE})")


def add_tls_flags(p: argparse.ArgumentParser) -> None:
    """`--insecure-http`, `--tls-san` (and the old `--tls` / `--no-tls`) for `shoal server` and `shoal up`."""
    p.add_argument("--insecure-http", action="store_true", help=INSECURE_HTTP_HELP)
    p.add_argument("--tls-san", action="append", default=[], metavar="NAME|IP",
                   help="extra subject alternative name of the serving certificate (repeatable): the address "
                        "or DNS name remote agents and kubectl use when it is not the listen address")
    p.add_argument("--tls", action="store_true", help="HTTPS (the default; accepted for older scripts)")
    p.add_argument("--no-tls", action=_NoTls)


def tls_settings(args, host: str) -> tuple[bool, str | None]:
    """(tls, error) for the flags given and the listen host (pure): HTTPS unless
    `--insecure-http`, which is refused off loopback and together with `--tls`."""
    from shoal.apiserver.settings import plain_http_refusal
    if not getattr(args, "insecure_http", False):
        return True, None
    if getattr(args, "tls", False):
        return False, "--tls and --insecure-http contradict each other: pick one"
    why = plain_http_refusal(host)
    return False, (f"--insecure-http: {why}" if why else None)


class ControllerProcess:
    """`shoal controller` as a child of the server: started with the admin kubeconfig,
    restarted if it dies, stopped (SIGTERM, then SIGKILL) with the server."""

    def __init__(self, kubeconfig: Path, argv: list[str]):
        self.kubeconfig = kubeconfig
        self.argv = [sys.executable, "-m", "shoal.cli", "controller", "--kubeconfig", str(self.kubeconfig), *argv]
        self._stop = threading.Event()
        self.proc = self._spawn()
        self._watch = threading.Thread(target=self._supervise, name="controller-supervisor", daemon=True)
        self._watch.start()

    def _spawn(self):
        return subprocess.Popen(self.argv, stdin=subprocess.DEVNULL)

    def _supervise(self) -> None:
        while not self._stop.wait(1.0):
            if self.proc.poll() is not None and not self._stop.is_set():
                log.warning("the controller process exited with %s; starting it again", self.proc.returncode)
                self.proc = self._spawn()

    def stop(self) -> None:
        self._stop.set()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)



def controllers_in_process(options: Any = None):
    """A controller factory for `ServerProcess.start`: the controllers as threads of the server."""
    def start(srv):
        from shoal.controller.manager import run_controllers
        return run_controllers(srv.client(user_agent="shoal-controller"), **({"options": options} if options else {}))
    return start


def controllers_as_child(argv: list[str]):
    """A controller factory: `shoal controller ARGV` as a supervised child of the server, with
    the admin kubeconfig the server wrote (the first of its kubeconfig paths that exists)."""
    def start(srv):
        admin = Path(srv.settings.data_dir) / "admin.kubeconfig"
        written = srv.kubeconfig_paths
        return ControllerProcess(admin if admin in written or admin.exists() else written[0], argv)
    return start


def register(sub) -> None:
    p = sub.add_parser("server", help="run the API server (and the controllers)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Run the shoal API server with its controllers (k3s style). It serves HTTPS "
                                   "with a CA it generates in <data-dir>/tls and writes an admin kubeconfig "
                                   "carrying that CA and a token, which shoal, kubectl and the Python kubernetes "
                                   "client use as they are.",
                       epilog="examples:\n  shoal server\n"
                              "  shoal server --datastore sqlite:////var/lib/shoal/server/state.db "
                              "--listen 0.0.0.0:6443 --tls-san 192.168.1.10\n"
                              "  shoal server --datastore postgresql://shoal:pw@db/shoal --no-controller\n"
                              "  shoal server --insecure-http   # plain HTTP on 127.0.0.1 (shoal's CLI only)")
    p.add_argument("--datastore", default="", help="SQLAlchemy URL (default sqlite:///<data-dir>/state.db)")
    p.add_argument("--listen", type=parse_listen, default=("127.0.0.1", 6443), help="HOST:PORT (127.0.0.1:6443)")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help=f"state, tokens, certs ({DEFAULT_DATA_DIR})")
    p.add_argument("--write-kubeconfig", type=Path, default=None,
                   help="where to write the admin kubeconfig (default: $KUBECONFIG or ~/.shoal/kubeconfig)")
    p.add_argument("--no-controller", action="store_true", help="do not run the controllers")
    p.add_argument("--controllers-in-process", action="store_true",
                   help="run the controllers as threads of the server process instead of a child process "
                        "(one process, but both share one core: Python's GIL)")
    add_tls_flags(p)
    p.add_argument("--compaction-interval", type=float, default=60.0, help="seconds between compactions (60)")
    p.add_argument("--history-window", type=float, default=300.0,
                   help="seconds of change history kept for watchers to resume from (300)")
    p.add_argument("--sqlite-synchronous", choices=("full", "normal"), default="full",
                   help="SQLite durability: full (default) fsyncs every write before answering it; normal is "
                        "faster but a power cut can lose acknowledged writes and reissue their revisions")
    p.add_argument("--pod-security", choices=("privileged", "baseline", "restricted"), default="privileged",
                   help="Pod Security enforce level of namespaces without a pod-security.kubernetes.io/enforce "
                        "label (privileged: none, as Kubernetes; docs/security.md)")
    p.add_argument("--event-ttl", type=float, default=3600.0,
                   help="seconds an Event is kept after it last occurred, as Kubernetes' --event-ttl (3600; "
                        "0 keeps them)")
    p.add_argument("--node-grace-period", type=float, default=None, help="seconds without a lease renewal before "
                   "a node is NotReady (8)")
    p.add_argument("--eviction-delay", type=float, default=None,
                   help="seconds a NotReady node keeps its pods before they are replaced (5)")
    p.add_argument("--cluster-cidr", default=None, help="pod network, one /24 per node (10.244.0.0/16)")
    add_service_flags(p)
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=run_server)

    c = sub.add_parser("controller", help="run the controllers alone against an API server",
                       description="Run the controllers (deployments, replica sets, scheduler, node lifecycle, "
                                   "garbage collector) against an API server.",
                       epilog="example:\n  shoal controller --kubeconfig /var/lib/shoal/server/admin.kubeconfig",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("--kubeconfig", type=Path, default=None, help="admin kubeconfig (default: $KUBECONFIG or "
                   "~/.shoal/kubeconfig)")
    c.add_argument("--node-grace-period", type=float, default=None)
    c.add_argument("--eviction-delay", type=float, default=None)
    c.add_argument("--cluster-cidr", default=None)
    c.add_argument("-v", "--verbose", action="store_true")
    c.set_defaults(func=run_controller)


def controller_options(args):
    from shoal.controller.manager import ControllerOptions
    kw = {}
    if getattr(args, "node_grace_period", None) is not None:
        kw["node_grace_period"] = args.node_grace_period
    if getattr(args, "eviction_delay", None) is not None:
        kw["eviction_delay"] = args.eviction_delay
    if getattr(args, "cluster_cidr", None):
        kw["cluster_cidr"] = args.cluster_cidr
    return ControllerOptions(**kw)


def controller_argv(args) -> list[str]:
    """The `shoal controller` flags that carry the server's controller options."""
    out = []
    for flag, attr in (("--node-grace-period", "node_grace_period"), ("--eviction-delay", "eviction_delay"),
                       ("--cluster-cidr", "cluster_cidr")):
        v = getattr(args, attr, None)
        if v is not None:
            out += [flag, str(v)]
    return out


def run_server(args) -> int:
    from shoal.apiserver.server import ServerProcess
    from shoal.apiserver.settings import Settings
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    host, port = args.listen
    tls, refused = tls_settings(args, host)
    if refused:
        print(f"error: {refused}", file=sys.stderr)
        return 2
    settings = Settings(data_dir=args.data_dir, datastore=args.datastore, listen_host=host, listen_port=port,
                        compaction_interval=args.compaction_interval, compaction_keep=args.history_window,
                        sqlite_synchronous=args.sqlite_synchronous, event_ttl=args.event_ttl,
                        tls=tls, tls_sans=list(args.tls_san), pod_security=args.pod_security,
                        service_cidr=args.service_cidr, service_node_port_range=args.service_node_port_range)
    kubeconfigs = [Path(args.data_dir) / "admin.kubeconfig", args.write_kubeconfig or default_kubeconfig()]
    try:
        srv = ServerProcess(settings, kubeconfig_paths=kubeconfigs)
        if args.no_controller:
            factory = None
        elif args.controllers_in_process:
            factory = controllers_in_process(controller_options(args))
        else:
            factory = controllers_as_child(controller_argv(args))
        srv.start(controllers=factory)
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"shoal server listening on {srv.url} (datastore {settings.datastore_url()})", flush=True)
    print(f"admin kubeconfig: {kubeconfigs[-1]}; join token: {Path(args.data_dir) / 'join-token'}", flush=True)
    if srv.tls_files:
        print(f"cluster CA: {srv.tls_files['ca']} (in the kubeconfig; the join token pins it)", flush=True)
    else:
        print("plain HTTP (--insecure-http): kubectl and the Python kubernetes client send no token over it; "
              "only shoal's CLI and agents work", flush=True)
    srv.wait_for_signal()
    print("shoal server stopped", flush=True)
    return 0


def run_controller(args) -> int:
    from shoal.machinery.client.rest import Client
    from shoal.controller.manager import run_controllers
    import signal
    import threading
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    client = Client.from_kubeconfig(getattr(args, "kubeconfig", None), user_agent="shoal-controller")
    mgr = run_controllers(client, options=controller_options(args))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    mgr.stop()
    return 0
