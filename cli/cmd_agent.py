"""`shoal agent`: run the node agent on this host (or a hollow one with --fake-runtime).

The agent joins with the join token (`agent.join.ensure_credentials`: the token
pins the server's CA, which is fetched from `/cacerts`, checked and trusted from
then on; the node credential is saved in `<data-dir>/credentials.json` and
reused, the serving certificate of its log endpoint in `<data-dir>/tls`), then runs
`agent.agent.Agent` on the real seams — `agent.images.LocalImageStore`,
`agent.runtime.RuncRuntime`, `agent.network.NodeNetwork` — or, with
`--fake-runtime`, on the scripted fakes of `agent.fakes` (a hollow node: no
root, no containers). SIGTERM/SIGINT stop the agent and leave the containers
running; the next start adopts them.

The agent runs the node's service proxy (`agent.serviceproxy`: Services as nftables rules in
table `ip shoal-svc`, `shoal-svc-<bridge>` beside another bridge) unless `--no-service-proxy`,
which removes the table an earlier run left (`service_proxy_runner`); a hollow node has none.
Stopping the agent leaves the rules in place.

`--registry-auth FILE` gives the node registry credentials of its own, in Docker's config
format (`{"auths": {...}}`, as `docker login` writes): read once at start
(`agent.images.dockerconfig.load_registry_auth`; an unreadable file stops the agent, a file
group or others may read is a warning), tried for every pull after the pod's matching
imagePullSecrets (docs/images.md, "Private registries").

Cluster DNS (`agent.dns`, docs/services.md "DNS"): `--cluster-domain` (cluster.local),
`--cluster-dns` (`node`: the agent serves DNS on its bridge address and its ClusterFirst
pods use it; `none`; or the IPs of a DNS server run elsewhere) and `--resolv-conf` (the
host's resolvers, forwarded to and given to Default-policy pods; `default_resolv_conf`
picks it as k3s does). A hollow node gives its pods the bridge address but serves nothing.
"""
from __future__ import annotations

import argparse
import logging
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

DEFAULT_DATA_DIR = Path("/var/lib/shoal/agent")
log = logging.getLogger("shoal.agent")


def _mirror(value: str) -> tuple[str, str]:
    host, sep, url = value.partition("=")
    if not sep or not host or not url:
        raise argparse.ArgumentTypeError(f"--registry-mirror {value!r}: expected HOST=URL, "
                                         f"e.g. docker.io=http://127.0.0.1:5000")
    return host, url


def server_url(value: str) -> str:
    """The API server URL of `--server`: `HOST:PORT` means https (every server serves it by
    default); `http://` is refused unless the host is a loopback address, since the join
    token and the node credential would then cross a network in the clear."""
    from urllib.parse import urlsplit
    from shoal.apiserver.settings import is_loopback_host
    v = value.strip().rstrip("/")
    if "://" not in v:
        v = f"https://{v}"
    u = urlsplit(v)
    try:
        u.port
    except ValueError:
        raise argparse.ArgumentTypeError(f"--server {value!r}: the port is not a number") from None
    if u.scheme not in ("https", "http") or not u.hostname:
        raise argparse.ArgumentTypeError(f"--server {value!r}: expected https://HOST:PORT, e.g. https://10.0.0.1:6443")
    if u.scheme == "http" and not is_loopback_host(u.hostname):
        raise argparse.ArgumentTypeError(
            f"--server {value!r}: plain HTTP would send the join token and the node credential in the clear; "
            f"shoal servers serve HTTPS: use https://{u.netloc}")
    return v


def absolute_path(value: str) -> Path:
    return Path(value).expanduser().absolute()


def registry_auth_problem(args) -> str | None:
    """Why `--registry-auth` cannot be used (None when it can, or is not given): checked
    before anything starts."""
    path = getattr(args, "registry_auth", None)
    if path is None:
        return None
    if getattr(args, "fake_runtime", False):
        return "--registry-auth: a hollow node (--fake-runtime) pulls no images"
    from shoal.agent.images.dockerconfig import DockerConfigError, load_registry_auth
    try:
        load_registry_auth(path)
    except DockerConfigError as e:
        return str(e)
    return None


def default_address() -> str:
    try:
        addr = socket.gethostbyname(socket.gethostname())
        if addr and not addr.startswith("127."):
            return addr
    except OSError:
        pass
    return "127.0.0.1"


def register(sub) -> None:
    p = sub.add_parser("agent", help="run the node agent (joins a cluster, runs its pods)",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Run the shoal node agent: register this host as a Node, renew its lease, "
                                   "and run the pods bound to it with runc.",
                       epilog="examples:\n"
                              "  shoal agent --server https://10.0.0.1:6443 --token K10...::server:...\n"
                              "  shoal agent --server https://127.0.0.1:6443 --token $(cat join-token) "
                              "--node-name hollow-1 --fake-runtime --data-dir /tmp/hollow-1 --kubelet-port 0")
    p.add_argument("--server", required=True, type=server_url,
                   help="URL of the API server, https://HOST:PORT (plain http:// only to a loopback address)")
    p.add_argument("--token", default="", help="join token K10<CA sha256>::server:<secret> from the server's "
                                               "<data-dir>/join-token: it pins the CA the agent trusts (needed on "
                                               "the first start; the node credential is saved in the data dir "
                                               "afterwards)")
    p.add_argument("--node-name", default=None, help="Node name (default: the host name)")
    p.add_argument("--address", default=None, help="this node's InternalIP: hostPorts and the overlay's underlay "
                                                   "address (default: the host name's address); the log endpoint "
                                                   "listens where the server saw the join come from, normally "
                                                   "this address")
    p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help=f"agent state ({DEFAULT_DATA_DIR})")
    p.add_argument("--run-dir", type=Path, default=None,
                   help="volatile container state (bundles, conmon's files; runc's state unless --runc-root): "
                        "it lives as long as the containers, so it belongs on tmpfs, e.g. /run/shoal/agent "
                        "(default: in the data dir)")
    p.add_argument("--runc-root", default=None, help="runc state directory (default <run-dir>/runc)")
    p.add_argument("--cgroup-parent", default="/shoal", help="cgroup under which containers are placed (/shoal)")
    p.add_argument("--pod-netns-prefix", default="shoal-",
                   help="name prefix of pod network namespaces (shoal-); lab hosts use their own")
    p.add_argument("--bridge", default="shoal0", metavar="NAME",
                   help="the pods' bridge (shoal0); the VXLAN device (<bridge>.1, shoal.1 for the default) and "
                        "the hostPort nft table are named after it")
    p.add_argument("--vxlan-port", type=int, default=8472, metavar="PORT", help="overlay UDP port (8472)")
    add_service_proxy_flag(p)
    p.add_argument("--fake-runtime", action="store_true",
                   help="hollow node: fake images, runtime and network (no root, nothing runs)")
    p.add_argument("--registry-mirror", type=_mirror, action="append", default=[], metavar="HOST=URL",
                   help="pull images of registry HOST from URL instead (repeatable)")
    p.add_argument("--insecure-registry", action="append", default=[], metavar="HOST",
                   help="talk plain HTTP to this registry (repeatable; loopback registries always are)")
    add_registry_auth_flag(p)
    add_dns_flags(p)
    p.add_argument("--backoff-initial", type=float, default=10.0, help="first crash-loop delay, seconds (10)")
    p.add_argument("--backoff-max", type=float, default=300.0, help="longest crash-loop delay, seconds (300)")
    p.add_argument("--kubelet-port", type=int, default=10250, help="log endpoint port, 0 = any (10250)")
    p.add_argument("--lease-interval", type=float, default=2.0, help="seconds between lease renewals (2)")
    p.add_argument("--relist-interval", type=float, default=0.5,
                   help="seconds between runtime relists that detect container exits (0.5)")
    p.add_argument("--max-pods", type=int, default=110)
    p.add_argument("--allow-privileged", action="store_true",
                   help="run containers with securityContext.privileged (refused by default)")
    p.add_argument("--pids-limit", type=int, default=4096, metavar="N",
                   help="most processes one container may run (4096; 0: no limit)")
    p.add_argument("--seccomp-profile", default="/usr/share/containers/seccomp.json", metavar="FILE",
                   help="the RuntimeDefault seccomp profile, in Docker's format (podman's default profile)")
    p.add_argument("--sync-threads", type=_positive_int, default=8, metavar="N",
                   help="pods worked on at once: setup, starts, stops (8)")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=run_agent)


def add_registry_auth_flag(p) -> None:
    p.add_argument("--registry-auth", type=absolute_path, default=None, metavar="FILE",
                   help="the node's registry credentials, Docker's config.json format ({\"auths\": {...}}, "
                        "as docker login writes it; mode 0600): tried for every pull after the pod's matching "
                        "imagePullSecrets")


def add_dns_flags(p) -> None:
    p.add_argument("--cluster-domain", type=_cluster_domain, default="cluster.local", metavar="DOMAIN",
                   help="the cluster DNS zone: <svc>.<ns>.svc.DOMAIN (cluster.local)")
    p.add_argument("--cluster-dns", type=_cluster_dns, default=(True, ()), metavar="node|none|IP[,IP...]",
                   help="the nameserver of ClusterFirst pods: node (default) = this agent's own DNS server on the "
                        "node's bridge address; none = no cluster DNS (pods get the host's resolvers); IP addresses "
                        "= a DNS server run elsewhere (this agent serves none)")
    p.add_argument("--resolv-conf", type=absolute_path, default=None, metavar="FILE",
                   help="the host's resolvers: where the cluster DNS forwards other names, and what Default-policy "
                        "pods get (default: /etc/resolv.conf, or /run/systemd/resolve/resolv.conf when only that "
                        "one names a non-loopback nameserver, as k3s picks)")


def _cluster_domain(v: str) -> str:
    from shoal.machinery.api.names import is_dns1123_subdomain
    d = v.strip().rstrip(".").lower()
    problems = is_dns1123_subdomain(d)
    if problems:
        raise argparse.ArgumentTypeError(f"--cluster-domain {v!r}: {problems[0]}")
    return d


def _cluster_dns(v: str) -> tuple[bool, tuple[str, ...]]:
    from shoal.agent.dns import parse_cluster_dns
    try:
        return parse_cluster_dns(v)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


RESOLV_CONF_CANDIDATES = (Path("/etc/resolv.conf"), Path("/run/systemd/resolve/resolv.conf"))


def default_resolv_conf(candidates=RESOLV_CONF_CANDIDATES) -> Path:
    """k3s' choice of the host's resolv.conf: the first candidate naming a nameserver that is
    not loopback, link-local, multicast or unspecified (systemd-resolved's stub 127.0.0.53 is
    useless to Default-policy pods, whose loopback is their own); else the first."""
    import ipaddress
    from shoal.agent.dns import resolv_conf_nameservers
    for path in candidates:
        try:
            servers = resolv_conf_nameservers(Path(path).read_text())
        except OSError:
            continue
        for s in servers:
            ip = ipaddress.ip_address(s)
            if not (ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_unspecified):
                return Path(path)
    return Path(candidates[0])


def dns_options(args, *, serve: bool):
    """The agent's DNSOptions from the DNS flags; `serve`: whether this node can serve (it
    has a real bridge)."""
    from shoal.agent.dns import DNSOptions
    enabled, nameservers = getattr(args, "cluster_dns", (True, ()))
    return DNSOptions(enabled=enabled, domain=getattr(args, "cluster_domain", "cluster.local"), nameservers=nameservers,
                      serve=serve and enabled and not nameservers, resolv_conf=str(resolv_conf_path(args)))


def resolv_conf_path(args) -> Path:
    return getattr(args, "resolv_conf", None) or default_resolv_conf()


def add_service_proxy_flag(p) -> None:
    p.add_argument("--no-service-proxy", action="store_true",
                   help="run no service proxy: no nftables rules for Services on this node (those an earlier run "
                        "left are removed); for a node whose Service traffic another proxy handles")


def service_proxy_conntrack(runner):
    """The service proxy's conntrack clean-up (agent.network.conntrack), with a real proxy."""
    if runner is None:
        return None
    from shoal.agent.network.conntrack import NetlinkConntrack
    return NetlinkConntrack()


def service_proxy_runner(args, bridge: str):
    """The nft runner of the agent's service proxy (docs/services.md, "Data path"), or None: a
    hollow node has none; with --no-service-proxy the table an earlier run left is removed
    here, since its rules would keep steering Service traffic to pods that may be gone."""
    if getattr(args, "fake_runtime", False):
        return None
    from shoal.agent.network.runner import CommandError, SubprocessRunner
    runner = SubprocessRunner()
    if not getattr(args, "no_service_proxy", False):
        return runner
    from shoal.agent.network.svcrules import svc_table_for
    from shoal.agent.serviceproxy import remove_table
    try:
        remove_table(runner, svc_table_for(bridge))
    except CommandError as e:
        log.warning("removing the service rules of an earlier run failed: %s", e)
    return None


def _positive_int(v: str) -> int:
    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r} is not a whole number") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{v!r}: at least 1")
    return n


def _runc_version() -> str:
    try:
        out = subprocess.run(["runc", "--version"], capture_output=True, text=True, timeout=5).stdout
        return "runc://" + out.split()[2]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "runc://unknown"


def build_seams(args, data_dir: Path):
    """(images, runtime, network, probe_executor, runtime_version) for the flags given."""
    if args.fake_runtime:
        from shoal.agent.fakes import FakeImageStore, FakeNetwork, FakeProbeExecutor, FakeRuntime
        rt = FakeRuntime()
        return FakeImageStore(), rt, FakeNetwork(), FakeProbeExecutor(rt), "fake://0"
    from shoal.agent.hostfiles import private_dir
    from shoal.agent.images import LocalImageStore, RegistryClient
    from shoal.agent.network import real_node_network
    from shoal.agent.probes import RealProbeExecutor
    from shoal.agent.runtime import RuncRuntime
    from shoal.agent.runtime.mounts import is_tmpfs
    from shoal.agent.images.dockerconfig import load_registry_auth
    registry = RegistryClient(mirrors=dict(args.registry_mirror), insecure_registries=args.insecure_registry)
    node_credentials = None
    if getattr(args, "registry_auth", None):
        node_credentials, warnings = load_registry_auth(args.registry_auth)
        for w in warnings:
            log.warning("%s", w)
        log.info("registry credentials for %s from %s", ", ".join(sorted({e.key for e in node_credentials.entries}))
                 or "no registry", args.registry_auth)
    images = LocalImageStore(data_dir / "images", registry_client=registry, node_credentials=node_credentials)
    run_dir = getattr(args, "run_dir", None)
    state = private_dir(run_dir, tighten=False) if run_dir else data_dir
    if run_dir and not is_tmpfs(state):
        log.warning("run dir %s is not on tmpfs: container state will outlive a reboot and every start "
                    "writes ≈ 20 files there to disk", state)
    runtime = RuncRuntime(str(data_dir / "runtime"), state_dir=str(state / "runtime") if run_dir else None,
                          runc_root=args.runc_root or str(state / "runc"), cgroup_parent=args.cgroup_parent,
                          seccomp_profile_path=getattr(args, "seccomp_profile", "/usr/share/containers/seccomp.json"),
                          pids_limit=getattr(args, "pids_limit", 4096) or None,
                          allow_privileged=getattr(args, "allow_privileged", False),
                          seccomp_dir=str(data_dir / "seccomp"), host_resolv_conf=str(resolv_conf_path(args)))
    bridge = getattr(args, "bridge", "shoal0")
    network = real_node_network(str(data_dir / "network"), netns_prefix=args.pod_netns_prefix, bridge=bridge,
                                vxlan_dev="shoal.1" if bridge == "shoal0" else f"{bridge[:13]}.1",
                                vxlan_port=getattr(args, "vxlan_port", 8472))
    return images, runtime, network, RealProbeExecutor(runtime), _runc_version()


def run_agent(args) -> int:
    from shoal.agent.network.svcrules import svc_table_for
    from shoal.agent.agent import Agent, AgentOptions
    from shoal.agent.hostfiles import private_dir
    from shoal.agent.join import JoinError, ensure_credentials, serving_tls
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("pyroute2", "httpcore", "asyncio"):
        # -v is about the agent's own steps; these would log every netlink message and socket read
        logging.getLogger(noisy).setLevel(logging.INFO)
    node = (args.node_name or socket.gethostname()).lower()
    address = args.address or default_address()
    problem = registry_auth_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    data_dir = private_dir(args.data_dir, tighten=False)      # 0700: credentials, bundles, layers (agent/hostfiles.py)
    try:
        creds = ensure_credentials(args.server, args.token, node, data_dir)
        kubelet_tls = serving_tls(data_dir)
    except JoinError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    images, runtime, network, prober, rt_version = build_seams(args, data_dir)
    opts = AgentOptions(backoff_initial=args.backoff_initial, backoff_max=args.backoff_max,
                        kubelet_port=args.kubelet_port, kubelet_tls=kubelet_tls,
                        lease_renew_interval=args.lease_interval, relist_interval=args.relist_interval,
                        max_pods=args.max_pods, probe_executor=prober, runtime_version=rt_version,
                        sync_threads=args.sync_threads, dns=dns_options(args, serve=not args.fake_runtime))
    opts.service_table = svc_table_for(args.bridge)
    proxy_runner = service_proxy_runner(args, args.bridge)
    agent = Agent(creds.client(user_agent=f"shoal-agent/{node}"), node_name=node, address=address,
                  data_dir=data_dir, images=images, runtime=runtime, network=network, options=opts,
                  service_proxy_runner=proxy_runner, service_proxy_conntrack=service_proxy_conntrack(proxy_runner))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    try:
        agent.start()
    except OSError as e:
        print(f"error: starting the agent of node {node} failed: {e}", file=sys.stderr)
        agent.stop()
        return 1
    print(f"shoal agent: node {node} ({address}) joined {args.server}; log endpoint on port "
          f"{agent.logserver.port if agent.logserver else '-'}", flush=True)
    stop.wait()
    agent.stop()
    print(f"shoal agent: node {node} stopped; its containers keep running", flush=True)
    return 0
