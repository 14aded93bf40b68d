"""`python -m apiserver ARGS` is `shoal server ARGS`."""
import argparse
import sys

from cli.cmd_server import register


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m apiserver")
    sub = ap.add_subparsers(dest="cmd")
    register(sub)
    args = ap.parse_args(["server", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
