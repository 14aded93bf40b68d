"""The OCI runtime spec (runc's `config.json`) for one container, as pure functions.

Contract: `build_oci_spec(cfg, rootfs=..., cgroups_path=..., user=..., etc_files=...)`
returns a dict that `json.dump` turns into a bundle's `config.json` for
ociVersion 1.0.2. It reads no files and runs nothing: everything that needs
the host or the image's rootfs (resolving a user *name* through the
rootfs's `/etc/passwd`, writing `/etc/hosts`) is done by the executor
(`agent.runtime.runc_runtime`) and passed in, so every field here is covered by
the table tests in `tests/unit/test_runtime_spec.py`.

What a container gets is what `docker run` gives by default:

- namespaces pid, mount, uts, ipc, cgroup and network — the network one joined
  by path when the pod has one (`cfg.netns_path`), else a fresh, empty one;
- Docker's 14 default capabilities in the bounding, effective and permitted
  sets (none inheritable or ambient, as Docker), changed by the container's
  `securityContext.capabilities` (drops first, then adds; `ALL` in either),
  `noNewPrivileges` unless `allowPrivilegeEscalation: true` or `privileged`
  (shoal's default is stricter than Kubernetes', whose unset field allows
  escalation), and RLIMIT_NOFILE 1048576 (what containerd/dockerd hand
  containers on a systemd host; runc's own example uses 1024, which breaks
  many servers);
- the default seccomp profile (`RuntimeDefault`: Docker's, see
  `agent.runtime.seccomp`) unless the container is privileged or its
  `seccomp` is `Unconfined`; a pids limit (`pids_limit`, default 4096 per
  container) against fork bombs;
- the pod's `fsGroup` and `supplementalGroups` as additional groups;
- a `Localhost` seccomp profile read by the executor from the node's profile directory;
- `readOnlyRootFilesystem` as a read-only root; `privileged` as Docker's
  `--privileged`: every capability, no seccomp, no masked or read-only paths,
  /sys and /sys/fs/cgroup writable, every device allowed and the host's /dev
  bound in (the executor allows it only on nodes started with
  `--allow-privileged`);
- the standard mounts (/proc, a tmpfs /dev, /dev/pts, a 64 MiB /dev/shm,
  /dev/mqueue, /sys and /sys/fs/cgroup read-only), Docker's masked and
  read-only paths, and Docker's device cgroup allow list;
- cgroup limits from `resources.limits`: cpu as CFS quota over a 100 ms period
  (clamped to the kernel's 1 ms minimum quota, as the kubelet does), memory as
  a hard limit with swap equal to it (no swap), as Kubernetes does;
- `/etc/hosts`, `/etc/hostname` and `/etc/resolv.conf` bind-mounted from files
  the executor writes per container (`render_hosts`, `render_resolv_conf`: the pod's
  `dnsPolicy` and `dnsConfig` by the kubelet's rules, `pod_resolv_conf`).

Not done: AppArmor/SELinux labels, user namespaces (a container's root is the host's
root, limited by the capabilities, seccomp and namespaces above).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from shoal.agent.interfaces import ALL_CAPABILITIES, ConfigRefused, ContainerConfig, ContainerSecurity, PodDNS
from shoal.agent.runtime.seccomp import SeccompProfileError, oci_seccomp

OCI_VERSION = "1.0.2"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# moby/oci/caps/defaults.go — the set `docker run` grants without --cap-add.
DOCKER_DEFAULT_CAPS: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD",
    "CAP_NET_RAW", "CAP_SETGID", "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL", "CAP_AUDIT_WRITE",
)

MASKED_PATHS: tuple[str, ...] = (
    "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
    "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
    "/sys/firmware", "/sys/devices/virtual/powercap",
)

READONLY_PATHS: tuple[str, ...] = (
    "/proc/asound", "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
)

NOFILE_LIMIT = 1048576
PIDS_LIMIT = 4096              # per container; podman's default is 2048, the kubelet's none
CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000       # the kernel rejects a smaller cfs_quota_us


def _dev(kind: str, major: int | None, minor: int | None, *, allow: bool = True) -> dict:
    rule: dict = {"allow": allow, "type": kind, "access": "rwm"}
    if major is not None:
        rule["major"] = major
    if minor is not None:
        rule["minor"] = minor
    return rule


def default_device_rules() -> list[dict]:
    """Docker's device cgroup: deny all, then the character devices every
    container gets (null, zero, full, random, urandom, tty, console, ptys),
    and `mknod` of any device (the nodes still need an allow rule to be
    opened). Docker also lists an explicit deny of /dev/fuse (10:229) after
    these; on cgroup v1 that is rejected ("cannot punch hole in existing
    wildcard rule") and it adds nothing to the deny-all, so it is left out.
    runc appends the same basics itself; spelling them out keeps the spec
    self-describing."""
    return [
        {"allow": False, "access": "rwm"},
        {"allow": True, "type": "c", "access": "m"},        # mknod any char device
        {"allow": True, "type": "b", "access": "m"},        # mknod any block device
        _dev("c", 1, 3),      # /dev/null
        _dev("c", 1, 5),      # /dev/zero
        _dev("c", 1, 7),      # /dev/full
        _dev("c", 1, 8),      # /dev/random
        _dev("c", 1, 9),      # /dev/urandom
        _dev("c", 5, 0),      # /dev/tty
        _dev("c", 5, 1),      # /dev/console
        _dev("c", 5, 2),      # /dev/ptmx
        _dev("c", 136, None),  # /dev/pts/*
    ]


def standard_mounts() -> list[dict]:
    return [
        {"destination": "/proc", "type": "proc", "source": "proc",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]


# ---------------------------------------------------------------------------- user
@dataclass(frozen=True)
class ResolvedUser:
    uid: int = 0
    gid: int = 0
    additional_gids: tuple[int, ...] = ()
    home: str = "/"


class UserResolutionError(ValueError):
    pass


def _parse_db(text: str) -> list[list[str]]:
    return [ln.split(":") for ln in text.splitlines() if ln and not ln.startswith("#")]


def resolve_user(user: str | None, *, passwd: str = "", group: str = "",
                 where: str = "the image") -> ResolvedUser:
    """`user` as in an image config or `runAsUser`: "", "name", "uid",
    "name:group", "uid:gid" … → numeric ids, supplementary groups and HOME.
    `passwd`/`group` are the texts of the rootfs's /etc/passwd and /etc/group
    (empty if absent). Numeric ids need no entry (Docker runs them as given,
    gid defaulting to the passwd entry's or 0); names must exist."""
    spec = (user or "").strip()
    users = _parse_db(passwd)
    groups = _parse_db(group)
    uname, _, gname = spec.partition(":")
    entry = None
    if uname == "":
        uname = "0"
    if uname.isdigit():
        uid = int(uname)
        entry = next((u for u in users if len(u) >= 4 and u[2] == uname), None)
    else:
        entry = next((u for u in users if len(u) >= 4 and u[0] == uname), None)
        if entry is None:
            raise UserResolutionError(f"user {uname!r} not found in /etc/passwd of {where}")
        uid = int(entry[2])
    home = entry[5] if entry and len(entry) >= 6 and entry[5] else ("/root" if uid == 0 else "/")
    if gname:
        if gname.isdigit():
            gid = int(gname)
        else:
            g = next((g for g in groups if len(g) >= 3 and g[0] == gname), None)
            if g is None:
                raise UserResolutionError(f"group {gname!r} not found in /etc/group of {where}")
            gid = int(g[2])
    else:
        gid = int(entry[3]) if entry and entry[3].isdigit() else 0
    extra: list[int] = []
    if entry is not None and not gname:
        # Supplementary groups only when the primary one came from passwd, as Docker does.
        for g in groups:
            if len(g) >= 4 and entry[0] in g[3].split(",") and g[2].isdigit():
                if int(g[2]) != gid and int(g[2]) not in extra:
                    extra.append(int(g[2]))
    return ResolvedUser(uid=uid, gid=gid, additional_gids=tuple(extra), home=home)


# ---------------------------------------------------------------------------- /etc files
def render_hosts(hostname: str, pod_ip: str | None) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback",
             "fe00::0\tip6-localnet", "fe00::0\tip6-mcastprefix",
             "fe00::1\tip6-allnodes", "fe00::2\tip6-allrouters"]
    if pod_ip and hostname:
        lines.append(f"{pod_ip}\t{hostname}")
    return "\n".join(lines) + "\n"


_LOOPBACK_NS = re.compile(r"^\s*nameserver\s+(127\.\S*|::1)\s*$")

# Kubernetes' limits (pkg/apis/core/validation), from glibc's: what the kubelet trims a pod's
# composed resolv.conf to.
MAX_DNS_NAMESERVERS = 3
MAX_DNS_SEARCH_PATHS = 32
MAX_DNS_SEARCH_LIST_CHARS = 2048
MAX_DNS_SEARCH_PATH_CHARS = 253     # a longer search path makes some glibc versions abort()
CLUSTER_DNS_OPTIONS = ("ndots:5",)


@dataclass(frozen=True)
class ResolvConf:
    """The three things of a resolv.conf a pod gets."""
    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[str, ...] = ()


def _is_loopback(ns: str) -> bool:
    return ns.startswith("127.") or ns == "::1"


def _merge_options(options: list[str], more: list[str]) -> list[str]:
    """Options by name, a later one replacing an earlier one of the same name in place."""
    merged: dict[str, str] = {}
    for o in options + more:
        merged[o.split(":", 1)[0]] = o
    return list(merged.values())


def _unique(items) -> tuple[str, ...]:
    return tuple(dict.fromkeys(items))


def parse_resolv_conf(text: str) -> ResolvConf:
    """The host's resolv.conf as the kubelet reads it: nameservers accumulate; the last
    `search` (or, as glibc, `domain`) line wins, `.` dropped and trailing dots trimmed; options
    accumulate, a later one replacing one of the same name. Comments (`#`, `;`) and other
    keywords are skipped."""
    nameservers: list[str] = []
    searches: list[str] = []
    options: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if not fields or fields[0][0] in "#;":
            continue
        key, rest = fields[0], fields[1:]
        if key == "nameserver" and rest:
            nameservers.append(rest[0])
        elif key in ("search", "domain"):
            searches = [d.rstrip(".") for d in (rest if key == "search" else rest[:1]) if d != "."]
        elif key == "options":
            options = _merge_options(options, rest)
    return ResolvConf(tuple(nameservers), tuple(searches), tuple(options))


def pod_resolv_conf(host: ResolvConf, dns: PodDNS) -> tuple[ResolvConf, list[str]]:
    """A pod's resolv.conf by the kubelet's rules (pkg/kubelet/network/dns), and the warnings
    the kubelet would record as DNSConfigForming events (limits exceeded):

    - `ClusterFirst` (and `ClusterFirstWithHostNet`: shoal has no host network) with a
      cluster DNS: its nameservers, `search <ns>.svc.<zone> svc.<zone> <zone>` then the
      host's search domains, `options ndots:5`;
    - `Default`, or ClusterFirst on a node without cluster DNS: the host's, without its
      loopback nameservers (they would point into the pod's own network namespace);
    - `None`: nothing but the pod's `dnsConfig`.

    The pod's `dnsConfig` is then added to any of them: nameservers and search domains
    appended without duplicates, options merged by name (the pod's win). Last, at most 3
    nameservers and 32 search domains are kept, a search domain above 253 characters is
    dropped, and the search line is cut from its end to 2048 characters."""
    if dns.policy == "None":
        nameservers: list[str] = []
        searches: list[str] = []
        options: list[str] = []
    elif dns.policy in ("ClusterFirst", "ClusterFirstWithHostNet") and dns.cluster_nameservers:
        nameservers = list(dns.cluster_nameservers)
        zone = dns.cluster_domain.strip(".")
        searches = list(_unique([f"{dns.namespace}.svc.{zone}", f"svc.{zone}", zone, *host.searches]))
        options = list(CLUSTER_DNS_OPTIONS)
    else:
        nameservers = [ns for ns in host.nameservers if not _is_loopback(ns)]
        searches, options = list(host.searches), list(host.options)
    nameservers = list(_unique([*nameservers, *dns.nameservers]))
    searches = list(_unique([*searches, *dns.searches]))
    options = _merge_options(options, [name if value is None or value == "" else f"{name}:{value}"
                                       for name, value in dns.options])
    warnings = []
    if len(nameservers) > MAX_DNS_NAMESERVERS:
        nameservers = nameservers[:MAX_DNS_NAMESERVERS]
        warnings.append("Nameserver limits were exceeded, some nameservers have been omitted, the applied "
                        f"nameserver line is: {' '.join(nameservers)}")
    cut = len(searches) > MAX_DNS_SEARCH_PATHS or any(len(d) > MAX_DNS_SEARCH_PATH_CHARS for d in searches)
    searches = [d for d in searches[:MAX_DNS_SEARCH_PATHS] if len(d) <= MAX_DNS_SEARCH_PATH_CHARS]
    while len(" ".join(searches)) > MAX_DNS_SEARCH_LIST_CHARS:
        searches.pop()
        cut = True
    if cut:
        warnings.append("Search Line limits were exceeded, some search paths have been omitted, the applied "
                        f"search line is: {' '.join(searches)}")
    return ResolvConf(tuple(nameservers), tuple(searches), tuple(options)), warnings


def format_resolv_conf(conf: ResolvConf) -> str:
    lines = [f"nameserver {ns}" for ns in conf.nameservers]
    if conf.searches:
        lines.append("search " + " ".join(conf.searches))
    if conf.options:
        lines.append("options " + " ".join(conf.options))
    return "".join(ln + "\n" for ln in lines)


def render_resolv_conf(host_resolv_conf: str, dns: PodDNS | None = None) -> str:
    """The resolv.conf of a container: with `dns`, the pod's (`pod_resolv_conf`); without,
    Docker's rule: the host's file without loopback nameservers (they would point into the
    container's own netns)."""
    if dns is not None:
        return format_resolv_conf(pod_resolv_conf(parse_resolv_conf(host_resolv_conf), dns)[0])
    kept = [ln for ln in host_resolv_conf.splitlines() if not _LOOPBACK_NS.match(ln)]
    return "\n".join(kept).strip("\n") + "\n" if any(k.strip() for k in kept) else ""


@dataclass(frozen=True)
class EtcFiles:
    """Host paths of the per-container files bind-mounted over /etc/…"""
    hosts: str
    hostname: str
    resolv_conf: str


# ---------------------------------------------------------------------------- the spec
def effective_hostname(cfg: ContainerConfig) -> str:
    return (cfg.hostname or cfg.pod_name or cfg.container_name)[:63]


def build_env(cfg: ContainerConfig, *, hostname: str, home: str) -> list[str]:
    """cfg.env as given (image env first, pod env overriding: last wins, as
    Docker), plus PATH, HOSTNAME and HOME when absent, as Docker adds them."""
    merged: dict[str, str] = {}
    for item in cfg.env:
        name, sep, value = item.partition("=")
        if not name:
            continue
        merged[name] = value if sep else ""
    merged.setdefault("PATH", DEFAULT_PATH)
    merged.setdefault("HOSTNAME", hostname)
    merged.setdefault("HOME", home)
    return [f"{k}={v}" for k, v in merged.items()]


def cpu_limits(cpu_millis: int | None) -> dict | None:
    if cpu_millis is None or cpu_millis <= 0:
        return None
    quota = max(MIN_CPU_QUOTA_US, cpu_millis * CPU_PERIOD_US // 1000)
    return {"quota": quota, "period": CPU_PERIOD_US}


def memory_limits(memory_bytes: int | None) -> dict | None:
    if memory_bytes is None or memory_bytes <= 0:
        return None
    return {"limit": memory_bytes, "swap": memory_bytes}


def annotations_for(cfg: ContainerConfig) -> dict[str, str]:
    ann = {
        "io.shoal.pod.uid": cfg.pod_uid,
        "io.shoal.pod.name": cfg.pod_name,
        "io.shoal.pod.namespace": cfg.namespace,
        "io.shoal.container.name": cfg.container_name,
        "io.shoal.container.attempt": str(cfg.attempt),
        "io.shoal.image.digest": cfg.image.digest,
    }
    ann.update({f"io.shoal.label.{k}": v for k, v in cfg.labels.items()})
    return ann


def _cap_name(name: str, *, field_path: str, where: str) -> str:
    n = name.strip().upper()
    if n == "ALL":
        return n
    full = n if n.startswith("CAP_") else "CAP_" + n
    if full not in ALL_CAPABILITIES:
        raise ConfigRefused(f"{where}: {field_path}: unknown capability {name!r}")
    return full


def capabilities(sec: ContainerSecurity, *, where: str = "container") -> list[str]:
    """The bounding/effective/permitted set: Docker's defaults, minus `drop`, plus `add`
    (either may say `ALL`); every capability when privileged. Refuses unknown names."""
    if sec.privileged:
        return list(ALL_CAPABILITIES)
    drop = {_cap_name(c, field_path="securityContext.capabilities.drop", where=where) for c in sec.caps_drop}
    add = [_cap_name(c, field_path="securityContext.capabilities.add", where=where) for c in sec.caps_add]
    caps = [] if "ALL" in drop else [c for c in DOCKER_DEFAULT_CAPS if c not in drop]
    if "ALL" in add:
        return list(ALL_CAPABILITIES)
    caps += [c for c in add if c not in caps]
    return caps


def check_run_as_non_root(sec: ContainerSecurity, user: "ResolvedUser", *, where: str) -> None:
    """kubelet's runAsNonRoot check, on the identity actually resolved (a user *name* of
    the image is resolved first, so it can be verified, unlike in the kubelet)."""
    if sec.run_as_non_root and user.uid == 0:
        raise ConfigRefused(f"{where}: securityContext.runAsNonRoot is set and the container would run as root "
                            "(uid 0): set runAsUser to a non-zero uid or use an image whose USER is not root")


def build_oci_spec(cfg: ContainerConfig, *, rootfs: str, cgroups_path: str,
                   user: ResolvedUser = ResolvedUser(), etc_files: EtcFiles | None = None,
                   readonly_rootfs: bool = False, nofile: int = NOFILE_LIMIT,
                   seccomp_profile: dict | None = None, pids_limit: int | None = PIDS_LIMIT) -> dict:
    """The `config.json` for `cfg`. `rootfs` is the (mounted) root filesystem,
    `cgroups_path` runc's cgroupfs path (e.g. "/shoal/<id>"), `user` the
    numeric identity the executor resolved from `cfg.user`, `seccomp_profile` the
    node's default profile in Docker's format (required unless the container runs
    unconfined: `SeccompProfileError` otherwise), `pids_limit` None for no limit.
    Raises `ConfigRefused` for a securityContext the runtime will not apply."""
    if not cfg.argv:
        raise ValueError(f"container {cfg.container_name!r} of pod {cfg.namespace}/{cfg.pod_name}: "
                         f"no command (image {cfg.image.reference} has no Entrypoint/Cmd and the pod gives none)")
    sec = cfg.security
    where = f"pod {cfg.namespace}/{cfg.pod_name}, container {cfg.container_name}"
    hostname = effective_hostname(cfg)
    caps = capabilities(sec, where=where)
    check_run_as_non_root(sec, user, where=where)
    process = {
        "terminal": False,
        "user": {"uid": user.uid, "gid": user.gid,
                 **({"additionalGids": gids} if (gids := list(dict.fromkeys(
                     [*user.additional_gids, *sec.supplemental_groups]))) else {})},
        "args": list(cfg.argv),
        "env": build_env(cfg, hostname=hostname, home=user.home),
        "cwd": cfg.working_dir or "/",
        "capabilities": {"bounding": caps, "effective": list(caps), "permitted": list(caps)},
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": nofile, "soft": nofile}],
        "noNewPrivileges": not (sec.privileged or sec.allow_privilege_escalation is True),
    }
    if not str(process["cwd"]).startswith("/"):
        raise ValueError(f"container {cfg.container_name!r}: workingDir {cfg.working_dir!r} is not absolute")

    mounts = standard_mounts()
    if sec.privileged:
        for std in mounts:
            if std["destination"] in ("/sys", "/sys/fs/cgroup"):
                std["options"] = [o for o in std["options"] if o != "ro"] + ["rw"]
        # the host's devices, as `docker run --privileged` gives (its own pts, shm, mqueue stay)
        i = next(i for i, std in enumerate(mounts) if std["destination"] == "/dev")
        mounts[i] = {"destination": "/dev", "type": "bind", "source": "/dev", "options": ["rbind", "rw"]}
    if etc_files is not None:
        for dest, src in (("/etc/hosts", etc_files.hosts), ("/etc/hostname", etc_files.hostname),
                          ("/etc/resolv.conf", etc_files.resolv_conf)):
            mounts.append({"destination": dest, "type": "bind", "source": src,
                           "options": ["rbind", "rprivate", "rw"]})
    for m in cfg.mounts:
        if not m.destination.startswith("/"):
            raise ValueError(f"container {cfg.container_name!r}: mount destination {m.destination!r} is not absolute")
        mounts.append({"destination": m.destination, "type": m.type, "source": m.source,
                       "options": list(m.options)})

    netns: dict = {"type": "network"}
    if cfg.netns_path:
        netns["path"] = cfg.netns_path
    resources: dict = {"devices": [{"allow": True, "access": "rwm"}] if sec.privileged
                       else default_device_rules()}
    if pids_limit is not None:
        resources["pids"] = {"limit": pids_limit}
    if (cpu := cpu_limits(cfg.cpu_millis)) is not None:
        resources["cpu"] = cpu
    if (mem := memory_limits(cfg.memory_bytes)) is not None:
        resources["memory"] = mem

    linux: dict = {
        "namespaces": [{"type": "pid"}, {"type": "mount"}, {"type": "uts"}, {"type": "ipc"}, {"type": "cgroup"},
                       netns],
        "resources": resources,
        "cgroupsPath": cgroups_path,
    }
    if not sec.privileged:
        linux["maskedPaths"] = list(MASKED_PATHS)
        linux["readonlyPaths"] = list(READONLY_PATHS)
        if sec.seccomp != "Unconfined":
            if seccomp_profile is None:
                raise SeccompProfileError(f"{where}: the RuntimeDefault seccomp profile is not loaded on this node")
            linux["seccomp"] = oci_seccomp(seccomp_profile, caps=caps)
    return {
        "ociVersion": OCI_VERSION,
        "process": process,
        "root": {"path": rootfs, "readonly": readonly_rootfs or sec.readonly_rootfs},
        "hostname": hostname,
        "mounts": mounts,
        "annotations": annotations_for(cfg),
        "linux": linux,
    }
