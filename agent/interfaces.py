"""The seams of the node agent: image store, container runtime, pod network.

The pod worker (`agent.worker`) only ever talks to these Protocols; the real
implementations live in `agent.images`, `agent.runtime` and `agent.network`,
and recording/scripted fakes in `agent.fakes` let the whole agent run in CI
without root ("hollow agents"). Keep these small: every method here is one
verb a kubelet-like worker needs, nothing more.
"""
from __future__ import annotations

import builtins
from dataclasses import dataclass, field
from typing import Callable, Literal, Mapping, Protocol, Sequence, runtime_checkable


# ---------------------------------------------------------------------------- images
class ImagePullError(Exception):
    """A pull failed. `reason` is what the pod status shows (ErrImagePull,
    ErrImageNeverPull, InvalidImageName); the message names image and digest."""

    def __init__(self, reference: str, message: str, reason: str = "ErrImagePull"):
        super().__init__(message)
        self.reference = reference
        self.message = message
        self.reason = reason


@dataclass
class PulledImage:
    reference: str          # as written in the pod spec, e.g. 127.0.0.1:5000/web:v1 or ...@sha256:...
    digest: str             # manifest digest, "sha256:<hex>"
    image_id: str           # containerStatuses[].imageID, "<registry>/<repo>@sha256:<hex>"
    layers: list[str]       # absolute paths of unpacked layer dirs, bottom first
    config: dict            # the OCI image config's "config" object (Env, Entrypoint, Cmd, WorkingDir, User, ...)


@dataclass(frozen=True)
class PullSecret:
    """One of a pod's `imagePullSecrets` as read from the API server: the Secret's type and
    its data, decoded. The image store reads the registry credentials in it
    (`kubernetes.io/dockerconfigjson`, `kubernetes.io/dockercfg`); the values never appear in
    a message or a repr."""
    namespace: str
    name: str
    type: str
    data: Mapping[str, bytes] = field(default_factory=dict, repr=False)

    @property
    def label(self) -> str:
        return f"{self.namespace}/{self.name}"


@runtime_checkable
class ImageStore(Protocol):
    def pull(self, reference: str, *, policy: str = "IfNotPresent",
             progress: Callable[[str], None] | None = None,
             pull_secrets: Sequence[PullSecret] = ()) -> PulledImage:
        """Make the image available locally (policy Always|IfNotPresent|Never) and return it.
        Every blob is verified against its digest before use. When the registry is asked
        (not present, or Always), the credentials are the pod's `pull_secrets` that match the
        image, then the node's own; each pull uses its own, never another pod's. An image
        already present satisfies IfNotPresent whatever the secrets (Kubernetes' behaviour).
        Raises ImagePullError."""

    def gc(self, in_use: set[str]) -> list[str]:
        """Remove images and layers not referenced by the given manifest digests; return what went."""


# ---------------------------------------------------------------------------- runtime
@dataclass
class Mount:
    source: str
    destination: str
    type: str = "bind"
    options: list[str] = field(default_factory=lambda: ["rbind", "rw"])


class ConfigRefused(ValueError):
    """The runtime will not create the container as configured (kubelet's
    CreateContainerConfigError): e.g. `runAsNonRoot` with an image that runs as root, a
    privileged container on a node that does not allow them, an unknown capability. The
    message names the pod, the container and the field; nothing was created."""


ALL_CAPABILITIES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID", "CAP_KILL",
    "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE", "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW", "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO", "CAP_SYS_CHROOT", "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT",
    "CAP_SYS_NICE", "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE", "CAP_MAC_ADMIN", "CAP_SYSLOG",
    "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)


@dataclass(frozen=True)
class ContainerSecurity:
    """A container's securityContext as the runtime applies it (docs/security.md).

    `caps_add`/`caps_drop` hold Kubernetes' names (`NET_ADMIN`, or `ALL`), not yet
    checked: the runtime refuses an unknown one (`ConfigRefused`). `allow_privilege_escalation`
    None means shoal's default: no new privileges (stricter than Kubernetes' default)."""
    privileged: bool = False
    caps_add: tuple[str, ...] = ()
    caps_drop: tuple[str, ...] = ()
    readonly_rootfs: bool = False
    allow_privilege_escalation: bool | None = None
    run_as_non_root: bool = False
    seccomp: str = "RuntimeDefault"      # or "Unconfined", or "Localhost" with `seccomp_localhost`
    seccomp_localhost: str = ""          # a profile file, relative to the node's seccomp directory
    supplemental_groups: tuple[int, ...] = ()   # the pod's fsGroup and supplementalGroups


@dataclass(frozen=True)
class PodDNS:
    """A pod's DNS settings, from which the runtime writes its /etc/resolv.conf with the
    kubelet's rules (`agent.runtime.spec.pod_resolv_conf`, docs/services.md "DNS").

    `policy` is the pod's `dnsPolicy`; `cluster_nameservers` the node's cluster DNS (empty
    when the node has none: ClusterFirst then falls back to the host's, as the kubelet does)
    and `cluster_domain` its zone; `nameservers`, `searches` and `options` (name, value or
    None) are the pod's `dnsConfig`."""
    policy: str = "ClusterFirst"
    namespace: str = "default"
    cluster_domain: str = "cluster.local"
    cluster_nameservers: tuple[str, ...] = ()
    nameservers: tuple[str, ...] = ()
    searches: tuple[str, ...] = ()
    options: tuple[tuple[str, str | None], ...] = ()


@dataclass
class ContainerConfig:
    """Everything the runtime needs to create one container (one restart attempt)."""
    id: str                      # runtime id, unique per attempt: "<pod-uid[:12]>-<container>-<attempt>"
    pod_uid: str
    pod_name: str
    namespace: str
    container_name: str
    attempt: int
    image: PulledImage
    argv: list[str]              # resolved: k8s command/args over the image's Entrypoint/Cmd
    env: list[str]               # "NAME=value", image env first, pod env overriding
    working_dir: str = "/"
    user: str | None = None      # "uid[:gid]" or a name resolved inside the rootfs
    hostname: str = ""
    netns_path: str | None = None    # join this network namespace (the pod's)
    pod_ip: str | None = None        # the pod's address in that namespace (for /etc/hosts)
    mounts: list[Mount] = field(default_factory=list)
    cpu_millis: int | None = None    # resources.limits.cpu
    memory_bytes: int | None = None  # resources.limits.memory
    log_path: str = ""
    labels: dict[str, str] = field(default_factory=dict)   # kept with the container; read back by list()
    security: ContainerSecurity = field(default_factory=ContainerSecurity)
    dns: PodDNS | None = None        # None: the host's resolv.conf without loopback nameservers (Docker's rule)


ContainerStatus = Literal["created", "running", "stopped", "unknown"]


@dataclass
class ContainerState:
    id: str
    status: ContainerStatus
    labels: dict[str, str] = field(default_factory=dict)
    pid: int | None = None
    exit_code: int | None = None
    started_at: float | None = None    # unix time
    finished_at: float | None = None
    oom_killed: bool = False
    log_path: str = ""


@runtime_checkable
class Runtime(Protocol):
    def create(self, cfg: ContainerConfig) -> None:
        """Prepare rootfs and bundle and create the container under its monitor (state 'created')."""

    def start(self, container_id: str) -> None: ...

    def run(self, cfg: ContainerConfig, *, ready: Callable[[], object] | None = None) -> None:
        """create + start as one step (state 'running'). `ready()`, if given, is called after
        the monitor exists and before any process of the container runs — the pod worker
        finishes the pod's network there meanwhile; if it raises, nothing of the container
        is left and the error propagates."""

    def kill(self, container_id: str, signal: int) -> None:
        """Send a signal to the container's init process; no error if it already exited."""

    def remove(self, container_id: str) -> None:
        """Delete runtime state, bundle, rootfs mount and cgroup. The container must be stopped."""

    def list(self) -> list[ContainerState]:
        """Every container this runtime manages, including ones created before an agent restart."""

    def state(self, container_id: str) -> ContainerState | None: ...

    def exec(self, container_id: str, argv: builtins.list[str], timeout: float) -> tuple[int, bytes]:
        """Run argv inside the running container; return (exit code, combined output)."""


@runtime_checkable
class ExitWatcher(Protocol):
    """An optional capability of a `Runtime`: block until some container exits. The agent
    relists at once when it returns True (a crash seen in milliseconds); a runtime without it
    is relisted on the agent's timer only."""

    def wait_exit(self, timeout: float) -> bool:
        """True when a container exited within `timeout` seconds, False on a time-out."""


# ---------------------------------------------------------------------------- network
@dataclass
class PodNet:
    pod_uid: str
    netns_path: str
    ip: str


@dataclass(frozen=True)
class Peer:
    """Another node of the overlay, as published on its Node object."""
    node: str
    underlay_ip: str     # the node's InternalIP
    vtep_mac: str        # the MAC of its VXLAN device
    pod_cidr: str        # its spec.podCIDR


@dataclass(frozen=True)
class HostPort:
    pod_uid: str
    host_port: int
    container_port: int
    protocol: str = "TCP"
    host_ip: str = ""    # "" = every node address


@runtime_checkable
class Network(Protocol):
    def ensure_node(self, pod_cidr: str) -> None:
        """Bridge `shoal0` with the first address of pod_cidr; forwarding on. Idempotent."""

    def reserve_pod(self, pod_uid: str, pod_name: str) -> PodNet:
        """The PodNet `setup_pod` will return (its IP allocated and kept on disk), without
        making anything yet: a container's config can be written while the network is made."""

    def setup_pod(self, pod_uid: str, pod_name: str) -> PodNet:
        """Netns + veth on the bridge + an IP kept on disk (same IP after an agent restart). Idempotent."""

    def teardown_pod(self, pod_uid: str) -> None:
        """Remove netns, veth, host ports and IP allocation. Idempotent."""

    def pods(self) -> list[str]:
        """uids of pods that have network state on this node."""

    def sync_host_ports(self, ports: list[HostPort]) -> None:
        """Converge the node's hostPort DNAT rules to exactly this set."""

    def ensure_overlay(self, underlay_ip: str) -> str:
        """Create (or reuse if compatible) the VXLAN device; return its MAC."""

    def sync_peers(self, peers: list[Peer]) -> None:
        """Converge routes, neighbours and FDB entries to exactly this peer set."""
