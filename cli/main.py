"""The `shoal` command: parser, dispatch and kubectl-style error reporting.

Contract: `main(argv=None, **io) -> int` parses argv, runs one handler and
returns the exit code (0 ok, 1 error, 2 usage, 130 interrupted); it never
calls sys.exit itself, so tests run the CLI in-process. The console script
(`shoal = cli.main:main`) exits with that code.

Extending: each module named in `EXTENSION_MODULES` (server, controller,
agent, up/down, lab, images) exposes `register(subparsers)` and adds its
own subcommands with `set_defaults(func=handler)`; handlers are
`handler(args) -> int | None` and find a `cli.context.Context` in
`args.ctx` (client, namespace, output streams, clocks). Modules are imported
when the parser is built; a module that does not exist yet is skipped, and
one that fails to import becomes a subcommand that reports why, instead of
breaking every other command. `client_options()` gives extension commands
the `--kubeconfig`/`-n` flags after the verb, as the built-in ones have.

Global flags (`--kubeconfig`, `-n`, `--request-timeout`) are accepted both
before and after the verb: the sub-parsers carry copies with SUPPRESS
defaults so a value given before the verb is not overwritten.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from typing import IO, Any, Callable

from shoal.machinery.api import errors
from shoal.machinery.api.resources import UnknownResource

from shoal.cli.context import Context

EXTENSION_MODULES: tuple[str, ...] = (
    "shoal.cli.cmd_server", "shoal.cli.cmd_controller", "shoal.cli.cmd_agent", "shoal.cli.cmd_up", "shoal.cli.cmd_lab", "shoal.cli.cmd_images",
    "shoal.cli.cmd_token",
)

OUTPUT_FORMATS = ("wide", "yaml", "json", "name")

TOP_EPILOG = """\
Examples:
  shoal up                                   # start a one-host cluster (server, controllers, agent)
  shoal apply -f manifests/demo.yaml         # create or update what the file describes
  shoal get pods -o wide                     # list pods with their IPs and nodes
  shoal rollout status deployment/web        # follow a rollout until it completes
  shoal describe pod web-6d4cf56db6-x2x8p    # details and events of one pod

Configuration: --kubeconfig, else $KUBECONFIG, else ~/.shoal/kubeconfig.
Run `shoal COMMAND --help` for the flags of each command.
"""


def _add_client_flags(p: argparse.ArgumentParser, *, suppress: bool) -> None:
    d = argparse.SUPPRESS if suppress else None
    p.add_argument("--kubeconfig", metavar="PATH", default=d,
                   help="kubeconfig file to use (default: $KUBECONFIG, else ~/.shoal/kubeconfig)")
    p.add_argument("-n", "--namespace", metavar="NS", default=d,
                   help="namespace to act in (default: the kubeconfig's, else 'default')")
    p.add_argument("--request-timeout", metavar="DURATION", default=d,
                   help="stop watches after this long (e.g. 30s, 5m); 0 means no limit")


def client_options() -> argparse.ArgumentParser:
    """A parent parser with --kubeconfig/-n/--request-timeout, for `add_parser(..., parents=[...])`."""
    p = argparse.ArgumentParser(add_help=False)
    _add_client_flags(p, suppress=True)
    return p


def _cmd(sub, name: str, *, help: str, epilog: str = "", func: Callable | None = None, client: bool = True,
         aliases: tuple[str, ...] = ()) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help[0].upper() + help[1:] + ".", epilog=epilog,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       parents=[client_options()] if client else [], aliases=list(aliases))
    if func is not None:
        p.set_defaults(func=func)
    return p


def _lazy(name: str) -> Callable[[Any], int]:
    """A handler that imports `cli.<module>` on first use (keeps `shoal --help` fast)."""
    module, _, attr = name.rpartition(".")

    def run(args):
        return getattr(importlib.import_module(f"shoal.cli.{module}"), attr)(args)
    run.__name__ = attr
    return run


def _build_builtin(sub) -> None:
    p = _cmd(sub, "apply", help="create or update objects from manifest files", func=_lazy("apply.run"), epilog="""\
Examples:
  shoal apply -f web.yaml                  # one file, one or more YAML documents
  shoal apply -f manifests/                # every .yaml/.yml/.json file in a directory
  cat web.yaml | shoal apply -f -          # standard input

Each object prints `KIND/NAME created|configured|unchanged`. A document with a YAML
or validation error is reported with its file, document number and field; nothing
from it is applied, the other documents are, and the exit code is 1.""")
    p.add_argument("-f", "--filename", action="append", required=True, metavar="FILE|DIR|-",
                   help="manifest file, directory or - for stdin (repeatable)")
    p.add_argument("-R", "--recursive", action="store_true", help="descend into subdirectories of DIR")

    p = _cmd(sub, "get", help="list objects as a table, YAML, JSON or names", func=_lazy("commands.cmd_get"),
             epilog="""\
Examples:
  shoal get pods                           # NAME READY STATUS RESTARTS AGE
  shoal get deploy,rs -n shop              # several kinds at once
  shoal get pods -A -o wide                # all namespaces, with IP and NODE
  shoal get deployment/web -o yaml         # one object as YAML
  shoal get nodes -o wide                  # INTERNAL-IP, POD-CIDR, PODS, ...
  shoal get pods -l app=web -w             # keep printing rows as pods change

Kinds: pods (po), services (svc), deployments (deploy), replicasets (rs), nodes (no),
namespaces (ns), events (ev), endpointslices, endpoints (ep), leases, or `all`; see
`shoal api-resources`.""")
    p.add_argument("resources", nargs="*", metavar="KIND [NAME...] | KIND/NAME...")
    p.add_argument("-o", "--output", choices=OUTPUT_FORMATS, help="output format (default: table)")
    p.add_argument("-l", "--selector", metavar="SELECTOR", help="label selector, e.g. app=web,tier!=db")
    p.add_argument("--field-selector", metavar="SELECTOR", help="field selector, e.g. spec.nodeName=node1")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="list across all namespaces")
    p.add_argument("-w", "--watch", action="store_true", help="after listing, print changes as they happen")
    p.add_argument("--watch-only", action="store_true", help="print changes only, without the initial list")
    p.add_argument("--show-labels", action="store_true", help="add a LABELS column")

    p = _cmd(sub, "describe", help="show details of objects, with their events",
             func=_lazy("commands.cmd_describe"), epilog="""\
Examples:
  shoal describe pod web-6d4cf56db6-x2x8p  # containers, states, probes, conditions, events
  shoal describe deployment/web            # replicas, strategy, conditions, ReplicaSets, events
  shoal describe nodes                     # every node: conditions, capacity, pods""")
    p.add_argument("resources", nargs="+", metavar="KIND [NAME...] | KIND/NAME...")
    p.add_argument("-l", "--selector", metavar="SELECTOR", help="label selector")
    p.add_argument("-A", "--all-namespaces", action="store_true", help="describe across all namespaces")

    p = _cmd(sub, "delete", help="delete objects by file, name or label selector",
             func=_lazy("commands.cmd_delete"), epilog="""\
Examples:
  shoal delete -f web.yaml                 # what the manifest describes
  shoal delete deployment web              # its ReplicaSets and pods go too (background cascade)
  shoal delete pod/web-6d4cf56db6-x2x8p --grace-period 5
  shoal delete pods -l app=web --no-wait
  shoal delete deployment web --cascade=orphan   # keep its ReplicaSets and pods
  shoal delete deployment web --dry-run=server   # checked by the server, nothing deleted

Waits until the objects are gone (--timeout), unless --no-wait.""")
    p.add_argument("resources", nargs="*", metavar="KIND [NAME...] | KIND/NAME...")
    p.add_argument("-f", "--filename", action="append", metavar="FILE|DIR|-", help="manifest(s) naming the objects")
    p.add_argument("-R", "--recursive", action="store_true", help="descend into subdirectories of DIR")
    p.add_argument("-l", "--selector", metavar="SELECTOR", help="delete the objects matching this label selector")
    p.add_argument("--all", action="store_true", help="delete every object of the kind in the namespace")
    p.add_argument("--grace-period", type=int, metavar="SECONDS",
                   help="seconds a pod gets to stop (default: the pod's terminationGracePeriodSeconds)")
    p.add_argument("--now", dest="grace_period", action="store_const", const=1, help="same as --grace-period 1")
    p.add_argument("--wait", action=argparse.BooleanOptionalAction, default=True,
                   help="wait until the objects are gone (default: yes)")
    p.add_argument("--timeout", default="2m", metavar="DURATION", help="how long to wait (default 2m)")
    p.add_argument("--ignore-not-found", action="store_true", help="objects that do not exist are not an error")
    p.add_argument("--cascade", choices=("background", "foreground", "orphan"), default="background",
                   help="what happens to dependents (ownerReferences), as kubectl's flag: background (the default: "
                        "deleted after the object), foreground (deleted first; the object waits for them) or "
                        "orphan (kept, their reference to the object removed)")
    p.add_argument("--dry-run", choices=("none", "server"), default="none",
                   help="server: the server checks the deletion and deletes nothing (no wait)")

    rollout = _cmd(sub, "rollout", help="manage the rollout of a deployment", client=False, epilog="""\
Examples:
  shoal rollout status deployment/web --timeout 2m
  shoal rollout history deployment/web
  shoal rollout undo deployment/web --to-revision 1
  shoal rollout pause deployment/web ; shoal rollout resume deployment/web
  shoal rollout restart deployment/web""")
    rsub = rollout.add_subparsers(dest="rollout_verb", metavar="VERB", required=True)
    p = _cmd(rsub, "status", help="follow a rollout until it completes", func=_lazy("commands.cmd_rollout_status"),
             epilog="""\
Examples:
  shoal rollout status deployment/web
  shoal rollout status deploy/web --timeout 5m

Prints a line each time the progress message changes, as kubectl does:
  Waiting for deployment "web" rollout to finish: 1 out of 3 new replicas have been updated...
  deployment "web" successfully rolled out
Exits 1 when the deployment exceeds its progress deadline or --timeout passes.""")
    p.add_argument("resources", nargs="+", metavar="deployment/NAME")
    p.add_argument("--timeout", default="0", metavar="DURATION", help="give up after this long (0: never)")
    p.add_argument("-w", "--watch", action=argparse.BooleanOptionalAction, default=True,
                   help="keep watching until done (--no-watch prints the status once)")
    p = _cmd(rsub, "history", help="list the revisions of a deployment", func=_lazy("commands.cmd_rollout_history"),
             epilog="Example:\n  shoal rollout history deployment/web --revision 2")
    p.add_argument("resources", nargs="+", metavar="deployment/NAME")
    p.add_argument("--revision", type=int, default=0, help="show the pod template of this revision")
    p = _cmd(rsub, "undo", help="roll back to the previous (or a given) revision",
             func=_lazy("commands.cmd_rollout_undo"), epilog="Example:\n  shoal rollout undo deployment/web --to-revision 1")
    p.add_argument("resources", nargs="+", metavar="deployment/NAME")
    p.add_argument("--to-revision", type=int, default=0, help="revision to roll back to (default: the previous one)")
    for verb, text in (("pause", "pause a deployment's rollouts (template changes wait)"),
                       ("resume", "resume a paused deployment")):
        p = _cmd(rsub, verb, help=text, func=_lazy("commands.cmd_rollout_pause_resume"),
                 epilog=f"Example:\n  shoal rollout {verb} deployment/web")
        p.add_argument("resources", nargs="+", metavar="deployment/NAME")
    p = _cmd(rsub, "restart", help="restart every pod of a deployment through a rollout",
             func=_lazy("commands.cmd_rollout_restart"), epilog="Example:\n  shoal rollout restart deployment/web")
    p.add_argument("resources", nargs="+", metavar="deployment/NAME")

    p = _cmd(sub, "scale", help="set the replica count of a deployment or replicaset",
             func=_lazy("commands.cmd_scale"), epilog="Examples:\n  shoal scale deployment/web --replicas 5\n"
                                                       "  shoal scale deploy web --replicas 0")
    p.add_argument("resources", nargs="+", metavar="deployment/NAME")
    p.add_argument("--replicas", type=int, required=True, help="the new replica count")

    p = _cmd(sub, "expose", help="make a Service in front of a deployment, replica set, pod or service",
             func=_lazy("commands.cmd_expose"), epilog="""\
Examples:
  shoal expose deployment web --port 80 --target-port 8080          # ClusterIP web:80 -> pods:8080
  shoal expose deploy/web --port 80 --type NodePort                 # also on every node, port 30000-32767
  shoal expose deployment web --port 80 --type LoadBalancer --name web-lb

The selector is the deployment's (or replica set's) matchLabels, a pod's labels or a service's
selector; without --port, one Service port per container port of the pod template.""")
    p.add_argument("resources", nargs="+", metavar="KIND NAME | KIND/NAME")
    p.add_argument("--port", help="the Service's port")
    p.add_argument("--target-port", help="the pods' port, a number or a container port name (default: --port)")
    p.add_argument("--protocol", choices=("TCP", "UDP", "SCTP"), help="the port's protocol (default TCP)")
    p.add_argument("--type", choices=("ClusterIP", "NodePort", "LoadBalancer"), help="the Service's type "
                   "(default ClusterIP)")
    p.add_argument("--name", help="the Service's name (default: the exposed object's)")
    p.add_argument("--selector", metavar="KEY=VALUE,...", help="select these pods instead of the object's")
    p.add_argument("--dry-run", choices=("none", "server"), default="none",
                   help="server: validate and allocate as the server would, create nothing")
    p.add_argument("-o", "--output", choices=("yaml", "json"), help="print the Service instead of a line")

    setp = _cmd(sub, "set", help="change a field of an object", client=False,
                epilog="Example:\n  shoal set image deployment/web web=registry.local:5000/web:v2")
    ssub = setp.add_subparsers(dest="set_verb", metavar="FIELD", required=True)
    p = _cmd(ssub, "image", help="change container images (starts a rollout)", func=_lazy("commands.cmd_set_image"),
             epilog="""\
Examples:
  shoal set image deployment/web web=nginx:1.28
  shoal set image deployment/web '*=busybox@sha256:...'   # every container""")
    p.add_argument("args", nargs="+", metavar="deployment/NAME CONTAINER=IMAGE")

    p = _cmd(sub, "logs", help="print the logs of a pod's container", func=_lazy("commands.cmd_logs"), epilog="""\
Examples:
  shoal logs web-6d4cf56db6-x2x8p
  shoal logs -f deployment/web             # a pod of the deployment, following
  shoal logs web-6d4cf56db6-x2x8p -c sidecar --previous --tail 20""")
    p.add_argument("pod", metavar="POD | TYPE/NAME")
    p.add_argument("container_arg", nargs="?", metavar="CONTAINER", help=argparse.SUPPRESS)
    p.add_argument("-c", "--container", help="container name (default: the only or first one)")
    p.add_argument("-f", "--follow", action="store_true", help="keep streaming new output")
    p.add_argument("-p", "--previous", action="store_true", help="the previous, terminated instance's log")
    p.add_argument("--tail", type=int, default=-1, help="only the last N lines (-1: all)")

    p = _cmd(sub, "version", help="print the client and server versions", func=_lazy("commands.cmd_version"),
             epilog="Example:\n  shoal version --client")
    p.add_argument("--client", action="store_true", help="client version only (no server needed)")

    _cmd(sub, "api-resources", help="list the kinds shoal serves, with short names",
         func=_lazy("commands.cmd_api_resources"), client=False)

    p = _cmd(sub, "completion", help="print a shell completion script", client=False,
             func=_lazy("completion.cmd_completion"), epilog="""\
Examples:
  source <(shoal completion bash)          # bash, this shell
  shoal completion bash > /etc/bash_completion.d/shoal
  source <(shoal completion zsh)           # zsh""")
    p.add_argument("shell", choices=("bash", "zsh"))


def _broken_module(sub, module: str, err: BaseException) -> None:
    name = module.rpartition(".cmd_")[2]
    reason = f"{type(err).__name__}: {err}"

    def run(args):
        args.ctx.error(f"shoal {name} is unavailable: importing {module} failed: {reason}")
        return 1
    p = sub.add_parser(name, help=f"(unavailable: {reason})", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=run)


def build_parser(*, extensions: tuple[str, ...] | None = None) -> argparse.ArgumentParser:
    from shoal.cli.commands import client_version
    if extensions is None:
        extensions = EXTENSION_MODULES
    parser = argparse.ArgumentParser(
        prog="shoal", description="shoal: a small Kubernetes-style container orchestrator.",
        epilog=TOP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"shoal {client_version()}")
    _add_client_flags(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _build_builtin(sub)
    for module in extensions:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == module:
                continue  # not written yet
            _broken_module(sub, module, e)
            continue
        except Exception as e:  # a broken extension must not take `shoal get` down with it
            _broken_module(sub, module, e)
            continue
        mod.register(sub)
    return parser


def describe_error(e: BaseException, ctx: Context) -> str:
    """The message for an exception that ends a command (without the `error: ` prefix)."""
    if isinstance(e, errors.ApiError):
        if e.reason == "ConnectionFailed":
            return ctx.unreachable_message(e)       # down, untrusted certificate, http/https mismatch
        if e.code == 401:
            return (f"You must be logged in to the server (Unauthorized): the token in "
                    f"{ctx.config().get('path', 'the kubeconfig')} was refused")
        if e.code == 403:
            return f"Forbidden: {e.message}"
        return str(e)
    if isinstance(e, UnknownResource):
        return str(e)
    return str(e)


def main(argv: list[str] | None = None, *, stdout: IO[str] | None = None, stderr: IO[str] | None = None,
         stdin: IO[str] | None = None, now: Callable | None = None, monotonic: Callable | None = None,
         client_factory: Callable | None = None) -> int:
    from shoal.cli.commands import UsageError
    out = stdout or sys.stdout
    err = stderr or sys.stderr
    parser = build_parser()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            args = parser.parse_args(argv)
    except SystemExit as e:  # --help, --version, usage errors
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    ctx_kw: dict[str, Any] = {"kubeconfig": getattr(args, "kubeconfig", None),
                              "namespace_flag": getattr(args, "namespace", None),
                              "stdout": out, "stderr": err, "stdin": stdin or sys.stdin,
                              "client_factory": client_factory}
    if now is not None:
        ctx_kw["now"] = now
    if monotonic is not None:
        ctx_kw["monotonic"] = monotonic
    ctx = Context(**ctx_kw)
    args.ctx = ctx
    try:
        rc = args.func(args)
        return 0 if rc is None else int(rc)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except UsageError as e:
        ctx.error(str(e))
        return 1
    except (errors.ApiError, UnknownResource, FileNotFoundError) as e:
        ctx.error(describe_error(e, ctx))
        return 1
    finally:
        ctx.close()


if __name__ == "__main__":  # python -m shoal.cli
    sys.exit(main())
