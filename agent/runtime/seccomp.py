"""The default seccomp profile (`RuntimeDefault`), turned into runc's `linux.seccomp`.

shoal does not keep a syscall list of its own: the profile is the one podman applies by
default (Docker's default profile, with the syscalls that capabilities already guard, such
as mount, left to the capabilities), as the Debian package `golang-github-containers-common`
installs it (`/usr/share/containers/seccomp.json`; `scripts/install.sh` installs the
package). Its format is moby's: rules that apply only when the container holds some capabilities
(`includes.caps`), lacks them (`excludes.caps`), runs on some architectures or kernels.

Contract: `oci_seccomp(profile, caps=..., arch=..., kernel=...)` is pure: it keeps the rules
that apply to a container with those capabilities on that machine, exactly as moby's
`setupSeccomp` decides, and returns the OCI runtime-spec `linux.seccomp` object (runc 1.1:
`defaultErrnoRet` included). `load_profile(path)` reads and checks the file; a missing or
unreadable profile is a `SeccompProfileError` naming the path and the package, so a node
without it refuses to start containers rather than running them unconfined.
"""
from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from typing import Any

DEFAULT_PROFILE_PATH = "/usr/share/containers/seccomp.json"

# uname -m -> libseccomp's name of the native architecture
_NATIVE_ARCH = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64", "armv7l": "SCMP_ARCH_ARM",
                "ppc64le": "SCMP_ARCH_PPC64LE", "s390x": "SCMP_ARCH_S390X", "riscv64": "SCMP_ARCH_RISCV64"}
# moby's names for an architecture in `includes.arches` (Go's GOARCH spelling)
_GOARCH = {"x86_64": "amd64", "aarch64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le", "s390x": "s390x",
           "riscv64": "riscv64"}


class SeccompProfileError(RuntimeError):
    """The default profile cannot be used; the message names the file and how to get it."""


def load_profile(path: str = DEFAULT_PROFILE_PATH) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            profile = json.load(f)
    except FileNotFoundError:
        raise SeccompProfileError(f"the default seccomp profile {path} does not exist: install the Debian package "
                                  "golang-github-containers-common (scripts/install.sh does), or point the agent "
                                  "at a profile with --seccomp-profile") from None
    except (OSError, ValueError) as e:
        raise SeccompProfileError(f"the default seccomp profile {path} cannot be read: {e}") from None
    if not isinstance(profile, dict) or not isinstance(profile.get("syscalls"), list) \
            or not isinstance(profile.get("defaultAction"), str):
        raise SeccompProfileError(f"{path} is not a seccomp profile in Docker's format "
                                  "(defaultAction and syscalls are required)")
    return profile


def _kernel_at_least(kernel: tuple[int, ...], want: str) -> bool:
    parts = []
    for p in want.split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        parts.append(int(digits or 0))
    return tuple(kernel) >= tuple(parts)


def host_kernel() -> tuple[int, ...]:
    out = []
    for p in platform.release().split("-")[0].split("."):
        digits = "".join(ch for ch in p if ch.isdigit())
        out.append(int(digits or 0))
    return tuple(out)


def oci_seccomp(profile: dict[str, Any], *, caps: Sequence[str], machine: str | None = None,
                kernel: tuple[int, ...] | None = None) -> dict[str, Any]:
    """`linux.seccomp` for a container holding `caps` (its bounding set) on `machine`
    (`uname -m`; the host's when None) running `kernel` (the host's when None)."""
    machine = machine or platform.machine()
    kernel = kernel if kernel is not None else host_kernel()
    native = _NATIVE_ARCH.get(machine)
    goarch = _GOARCH.get(machine, machine)
    held = set(caps)

    arches: list[str] = []
    for entry in profile.get("archMap") or []:
        if native and entry.get("architecture") == native:
            arches = [native, *(entry.get("subArchitectures") or [])]
    if not arches and native:
        arches = [native]

    out: dict[str, Any] = {"defaultAction": profile["defaultAction"]}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    if arches:
        out["architectures"] = arches
    syscalls = []
    for rule in profile["syscalls"]:
        inc, exc = rule.get("includes") or {}, rule.get("excludes") or {}
        if inc.get("caps") and not all(c in held for c in inc["caps"]):
            continue
        if exc.get("caps") and any(c in held for c in exc["caps"]):
            continue
        if inc.get("arches") and goarch not in inc["arches"]:
            continue
        if exc.get("arches") and goarch in exc["arches"]:
            continue
        if inc.get("minKernel") and not _kernel_at_least(kernel, str(inc["minKernel"])):
            continue
        names = list(rule.get("names") or ([rule["name"]] if rule.get("name") else []))
        if not names:
            continue
        sc: dict[str, Any] = {"names": names, "action": rule["action"]}
        if rule.get("errnoRet") is not None:
            sc["errnoRet"] = rule["errnoRet"]
        if rule.get("args"):
            sc["args"] = [{"index": a["index"], "value": a["value"], "valueTwo": a.get("valueTwo", 0),
                           "op": a["op"]} for a in rule["args"]]
        syscalls.append(sc)
    out["syscalls"] = syscalls
    return out
