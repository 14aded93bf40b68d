"""`shoal lab`: try a multi-host cluster on one machine (see `shoal.testkit.lab` for the layout).

    eval "$(shoal lab up --nodes 3)"      # prints export KUBECONFIG=… and export SHOAL_REGISTRY=…
    shoal lab stop-host h2 / start-host h2 / cut h3 / heal h3
    shoal lab exec h1 -- ip route
    shoal lab status
    shoal lab down
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

EPILOG = """\
examples:
  eval "$(shoal lab up --nodes 3)"          # 3 hosts, a control plane and a registry
  skopeo copy --dest-tls-verify=false oci:web docker://$SHOAL_REGISTRY/web:v1
  shoal apply -f deploy.yaml                # image: <SHOAL_REGISTRY>/web:v1
  shoal lab stop-host h2                    # the VM dies: agent and containers killed
  shoal lab cut h3; sleep 30; shoal lab heal h3   # a partition
  shoal lab exec h1 -- ip -d link show shoal.1
  shoal lab down                            # removes everything it made
"""


def register(sub) -> None:
    p = sub.add_parser("lab", help="a multi-host cluster on this machine, in network namespaces",
                       description="Build and drive a lab: N hosts as network namespaces on a bridge, the "
                                   "control plane and a registry in their own namespace, one agent per host.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    ls = p.add_subparsers(dest="lab_cmd", metavar="COMMAND")
    ls.required = True

    def add(name: str, help: str, func, host: bool = False):
        q = ls.add_parser(name, help=help, description=help)
        q.add_argument("--name", default="lab", help="the lab's name (lab)")
        if host:
            q.add_argument("host", help="host name, e.g. h1")
        q.set_defaults(func=func)
        return q

    q = add("up", "build the lab and start everything; prints export lines", cmd_up)
    q.add_argument("--nodes", type=int, default=3, help="number of hosts (3)")
    q.add_argument("--subnet", default=None, help="private /24 used inside the lab (10.213.0.0/24)")
    q.add_argument("--api-port", type=int, default=0, help="loopback port of the API server (any free)")
    q.add_argument("--registry-port", type=int, default=0, help="loopback port of the registry (any free)")
    q.add_argument("--node-grace-period", type=float, default=None)
    q.add_argument("--eviction-delay", type=float, default=None)
    q.add_argument("--timeout", type=float, default=120.0, help="seconds to wait for the nodes (120)")
    add("down", "remove every process, namespace, link, mount, cgroup and file of the lab", cmd_down)
    add("status", "processes, links and node readiness", cmd_status).add_argument(
        "-o", "--output", choices=["table", "json"], default="table")
    add("stop-host", "kill a host's agent and containers, as if the VM died", cmd_stop_host, host=True)
    add("start-host", "start a stopped host's agent again", cmd_start_host, host=True)
    add("cut", "take a host's link down (a partition)", cmd_cut, host=True)
    add("heal", "bring a host's link back up", cmd_heal, host=True)
    q = add("exec", "run a command in a host's namespaces", cmd_exec, host=True)
    q.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")


def _lab(args):
    from shoal.testkit.lab import Lab
    return Lab(args.name, out=lambda m: print(m, file=sys.stderr, flush=True))


def _guard(fn):
    def run(args) -> int:
        from shoal.testkit.lab import LabError
        if os.geteuid() != 0:
            print("error: shoal lab needs root (network namespaces, cgroups, mounts)", file=sys.stderr)
            return 1
        try:
            return fn(args) or 0
        except LabError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
    return run


@_guard
def cmd_up(args) -> int:
    from shoal.testkit.lab import DEFAULT_SUBNET
    lab = _lab(args)
    st = lab.up(args.nodes, subnet=args.subnet or DEFAULT_SUBNET, api_port=args.api_port,
                registry_port=args.registry_port, node_grace_period=args.node_grace_period,
                eviction_delay=args.eviction_delay, ready_timeout=args.timeout)
    print(f"export KUBECONFIG={lab.plan(st).kubeconfig}")
    print(f"export SHOAL_REGISTRY={lab.registry_host(st)}")
    return 0


@_guard
def cmd_down(args) -> int:
    _lab(args).down()
    return 0


@_guard
def cmd_status(args) -> int:
    s = _lab(args).status()
    if args.output == "json":
        print(json.dumps(s, indent=1))
        return 0
    cp = s["controlPlane"]
    run = lambda p: f"pid {p['pid']}" if p["running"] else "stopped"  # noqa: E731
    print(f"lab {s['name']}  subnet {s['subnet']}  api {s['api']}  registry {s['registry']}")
    print(f"control plane {cp['ip']}: server {run(cp['server'])}, registry {run(cp['registry'])}, "
          f"forwarder {run(cp['forwarder'])}")
    from shoal.cli.tabwriter import get_table
    rows = [["HOST", "ADDRESS", "AGENT", "LINK", "NODE"]]
    rows += [[h["name"], h["ip"], run(h["agent"]), h["link"], h["node"]] for h in s["hosts"]]
    print(get_table(["\t".join(r) for r in rows]), end="")
    print(f"export KUBECONFIG={s['kubeconfig']}")
    return 0


@_guard
def cmd_stop_host(args) -> int:
    _lab(args).stop_host(args.host)
    return 0


@_guard
def cmd_start_host(args) -> int:
    _lab(args).start_host(args.host)
    return 0


@_guard
def cmd_cut(args) -> int:
    _lab(args).set_link(args.host, up=False)
    return 0


@_guard
def cmd_heal(args) -> int:
    _lab(args).set_link(args.host, up=True)
    return 0


@_guard
def cmd_exec(args) -> int:
    argv = list(args.argv)
    if argv and argv[0] == "--":
        argv = argv[1:]
    if not argv:
        print("error: shoal lab exec HOST -- COMMAND [ARGS...]: no command given", file=sys.stderr)
        return 2
    return subprocess.call(_lab(args).exec_argv(args.host, argv))
