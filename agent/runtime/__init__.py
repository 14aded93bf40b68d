"""The container runtime of the node agent: runc under a conmon per container.

A tour, in the order a container's life goes through it:

1. `spec` — pure: `build_oci_spec(cfg, rootfs=..., cgroups_path=..., user=...)`
   turns an `agent.interfaces.ContainerConfig` into runc's config.json (Docker's
   default privileges, namespaces, limits, masked paths); `resolve_user` maps
   "name[:group]" through the image's /etc/passwd and /etc/group texts.
2. `mounts` — the overlay rootfs (layers reversed into lowerdir, a per-container
   upper dir), one mount(2) through libc.
3. `cgroups` — the hierarchies of this host (v1, v2 or hybrid), the monitors'
   own cgroup, cleanup of left-overs, the OOM-kill counter.
4. `monitor` — conmon: its argv (pure), spawning it into its cgroup, the sync
   pipe that says when `runc create` is done, and the run shim through which
   conmon's `create` becomes `runc run --detach` (`RuncRuntime.run`: one runc
   process per container). Why conmon, and what we learnt about it on this
   machine, is in its docstring.
5. `runc` — the `runc` binary behind a `CommandRunner` seam (with a recording
   fake), always with its own `--root`.
6. `runc_runtime` — `RuncRuntime`, the executor implementing the agent's
   `Runtime` protocol over 1–5; everything it needs after an agent restart is
   on disk (its docstring has the layout).
7. `logs` — the k8s-file log format conmon writes, keeping one rotated
   generation as `<log>.1`, and `read_log` (tail, follow across rotation).

The pod worker (`agent.worker`) only sees the `Runtime` protocol; unit tests use
`agent.fakes.FakeRuntime`, e2e tests (`tests/e2e/test_runtime_runc.py`) this.
"""
from shoal.agent.runtime.runc_runtime import ContainerExists, CreateError, RuncRuntime
from shoal.agent.runtime.spec import build_oci_spec, resolve_user

__all__ = ["RuncRuntime", "ContainerExists", "CreateError", "build_oci_spec", "resolve_user"]
