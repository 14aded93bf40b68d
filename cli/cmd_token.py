"""`shoal token rotate join|admin`: replace a cluster token; the old one stops working."""
from __future__ import annotations

import argparse
import sys


def register(sub) -> None:
    from shoal.cli.main import client_options
    p = sub.add_parser("token", help="manage cluster tokens",
                       description="Manage the cluster's join and admin tokens.",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog="examples:\n  shoal token rotate join     # new agents need the new token; joined "
                              "nodes keep their credentials\n"
                              "  shoal token rotate admin    # rewrites your kubeconfig with the new token")
    tsub = p.add_subparsers(dest="token_cmd", metavar="COMMAND")
    p.set_defaults(func=lambda a: (p.print_help(), 1)[1])
    r = tsub.add_parser("rotate", help="replace the join or admin token", parents=[client_options()])
    r.add_argument("role", choices=["join", "admin"])
    r.set_defaults(func=run_rotate)


def run_rotate(args) -> int:
    from shoal.machinery.client.rest import Client, load_kubeconfig, write_kubeconfig
    from shoal.machinery.api import errors
    path = getattr(args, "kubeconfig", None)
    cfg = load_kubeconfig(path)
    c = Client(cfg["server"], cfg.get("token"), ca_file=cfg.get("ca_file"), ca_data=cfg.get("ca_data"))
    try:
        out = c.request("POST", "/shoal/v1/tokens/rotate", body={"role": args.role})
    except errors.ApiError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    if args.role == "admin":
        write_kubeconfig(cfg["path"], server=cfg["server"], token=out["token"], ca_data_b64=cfg.get("ca_data"))
        print(f"admin token rotated; {cfg['path']} now holds the new one (the old token no longer works)")
    else:
        print("join token rotated (nodes already joined keep their credentials); new token:")
        print(out["token"])
    return 0
