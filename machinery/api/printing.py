"""kubectl's columns and cells for every kind shoal serves: what `kubectl get` shows.

One table per kind (`COLUMNS`), each column Kubernetes' name (`Up-to-date`, `Nominated
Node`: kubectl upper-cases them), its type, its priority (1 = shown by `-o wide` only), its
format (`name` marks the column kubectl prefixes with `deployment.apps/`) and a cell
function of (object, now). The cell rules are those of Kubernetes' server-side printers
(pkg/printers/internalversion): pod STATUS as kubectl shows it (`CrashLoopBackOff`,
`Init:0/1`, `Terminating`, `Completed`...), RESTARTS with the time of the last restart,
node STATUS and ROLES, the label selector's canonical string, event OBJECT and SOURCE.
Integer columns give ints, the rest strings, as Kubernetes' Table cells do.

Two readers, one rule:
- the API server answers `Accept: application/json;as=Table;v=v1;g=meta.k8s.io` with a
  `meta.k8s.io/v1` Table built from these columns (`apiserver.tables`);
- shoal's own CLI prints them (`cli.printers`), with a few shoal additions of its own.

Everything is a pure function of (objects, now). AGE is `human_duration`, a port of
apimachinery's `duration.HumanDuration`.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Union

from shoal.machinery.api.objects import meta
from shoal.machinery.api.selectors import selector_from_label_selector
from shoal.machinery.api.times import parse_datetime

NONE = "<none>"
UNKNOWN = "<unknown>"

Cell = Union[str, int]


# --- time ---------------------------------------------------------------------------

def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration: `45s`, `5m12s`, `12m`, `3h`, `5h10m`, `2d`, `3d4h`, `1y20d`.

    Up to a second in the future (clock skew) is `0s`; more is `<invalid>`."""
    s = int(seconds)            # Go's int(d.Seconds()) truncates toward zero
    if s < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 60 * 2:
        return f"{s}s"
    minutes = s // 60
    if minutes < 10:
        rem = s % 60
        return f"{minutes}m" if rem == 0 else f"{minutes}m{rem}s"
    if minutes < 60 * 3:
        return f"{minutes}m"
    hours = s // 3600
    if hours < 8:
        m = minutes % 60
        return f"{hours}h" if m == 0 else f"{hours}h{m}m"
    if hours < 48:
        return f"{hours}h"
    if hours < 24 * 8:
        h = hours % 24
        return f"{hours // 24}d" if h == 0 else f"{hours // 24}d{h}h"
    if hours < 24 * 365 * 2:
        return f"{hours // 24}d"
    if hours < 24 * 365 * 8:
        dy = (hours // 24) % 365
        return f"{hours // 24 // 365}y" if dy == 0 else f"{hours // 24 // 365}y{dy}d"
    return f"{hours // 24 // 365}y"


def since(value: str | None, now: datetime) -> str:
    """kubectl's translateTimestampSince: `<unknown>` for a missing (or unreadable) timestamp."""
    t = parse_datetime(value)
    if t is None:
        return UNKNOWN
    return human_duration((now - t).total_seconds())


def age(obj: dict, now: datetime) -> str:
    return since(meta(obj).get("creationTimestamp"), now)


# --- small helpers --------------------------------------------------------------------

def _spec(obj: dict) -> dict:
    return obj.get("spec") or {}


def _status(obj: dict) -> dict:
    return obj.get("status") or {}


def _int(v: Any) -> int:
    try:
        return int(v or 0)
    except (TypeError, ValueError):
        return 0


def selector_string(selector: dict | None) -> str:
    """`metav1.LabelSelectorAsSelector(s).String()`: `app=web,tier in (a,b)`, "" for none or
    every object, `<invalid>` for a selector that cannot be converted."""
    try:
        return str(selector_from_label_selector(selector))
    except ValueError:
        return "<invalid>"


# --- pods -------------------------------------------------------------------------------

@dataclass(frozen=True)
class PodSummary:
    ready: str  # "1/2"
    status: str  # "Running", "CrashLoopBackOff", "Init:0/1", "Terminating", ...
    restarts: str  # "0", "3 (12s ago)"


def _condition_true(status: dict, kind: str) -> bool:
    for c in status.get("conditions") or []:
        if c.get("type") == kind:
            return c.get("status") == "True"
    return False


def pod_summary(pod: dict, now: datetime) -> PodSummary:
    """kubectl's READY, STATUS (the reason) and RESTARTS of one pod (Kubernetes' printPod).

    STATUS is, in order of precedence: `Terminating` (deletion requested, not finished) or
    `Unknown` (deleted on a lost node); while an init container has not succeeded,
    `Init:<reason>`, `Init:ExitCode:N`, `Init:Signal:N` or `Init:i/n`; else the last
    container (in spec order, read backwards) that is waiting or terminated gives its reason
    (`ContainerCreating`, `CrashLoopBackOff`, `Completed`, `ExitCode:N`...); else the pod's
    `status.reason` or phase. A `Completed` container next to a running one reads `Running`
    (or `NotReady` without the Ready condition). shoal has no restartable (sidecar) init
    containers, so init containers count in RESTARTS only while the pod initializes, as in
    Kubernetes."""
    spec, status, md = _spec(pod), _status(pod), meta(pod)
    containers = spec.get("containers") or []
    init_containers = spec.get("initContainers") or []
    total = len(containers)
    ready_count = 0
    restarts = 0
    last_restart: datetime | None = None
    phase = status.get("phase") or ""
    reason = status.get("reason") or phase
    for cond in status.get("conditions") or []:
        if cond.get("type") == "PodScheduled" and cond.get("reason") == "SchedulingGated":
            reason = "SchedulingGated"

    def note_restart(cs: dict) -> None:
        nonlocal last_restart
        term = (cs.get("lastState") or {}).get("terminated")
        if term:
            t = parse_datetime(term.get("finishedAt"))
            if t and (last_restart is None or t > last_restart):
                last_restart = t

    initializing = False
    for i, cs in enumerate(status.get("initContainerStatuses") or []):
        restarts += _int(cs.get("restartCount"))
        note_restart(cs)
        state = cs.get("state") or {}
        term, waiting = state.get("terminated"), state.get("waiting")
        if term and _int(term.get("exitCode")) == 0:
            continue
        if term:
            if term.get("reason"):
                reason = "Init:" + term["reason"]
            elif _int(term.get("signal")):
                reason = f"Init:Signal:{_int(term.get('signal'))}"
            else:
                reason = f"Init:ExitCode:{_int(term.get('exitCode'))}"
        elif waiting and waiting.get("reason") and waiting.get("reason") != "PodInitializing":
            reason = "Init:" + waiting["reason"]
        else:
            reason = f"Init:{i}/{len(init_containers)}"
        initializing = True
        break

    if not initializing or _condition_true(status, "Initialized"):
        # Once initialized, only restartable init containers count: shoal has none.
        restarts, last_restart = 0, None
        has_running = False
        for cs in reversed(status.get("containerStatuses") or []):
            restarts += _int(cs.get("restartCount"))
            note_restart(cs)
            state = cs.get("state") or {}
            waiting, term, running = state.get("waiting"), state.get("terminated"), state.get("running")
            if waiting and waiting.get("reason"):
                reason = waiting["reason"]
            elif term and term.get("reason"):
                reason = term["reason"]
            elif term:
                sig = _int(term.get("signal"))
                reason = f"Signal:{sig}" if sig else f"ExitCode:{_int(term.get('exitCode'))}"
            elif cs.get("ready") and running is not None:
                has_running = True
                ready_count += 1
        if reason == "Completed" and has_running:
            reason = "Running" if _condition_true(status, "Ready") else "NotReady"

    if md.get("deletionTimestamp") and status.get("reason") == "NodeLost":
        reason = "Unknown"
    elif md.get("deletionTimestamp") and phase not in ("Succeeded", "Failed"):
        reason = "Terminating"

    restarts_str = str(restarts)
    if restarts and last_restart is not None:
        restarts_str = f"{restarts} ({human_duration((now - last_restart).total_seconds())} ago)"
    return PodSummary(f"{ready_count}/{total}", reason, restarts_str)


def pod_ip(pod: dict) -> str:
    """The first of `status.podIPs` (`status.podIP` when only that is set), else `<none>`."""
    st = _status(pod)
    ips = st.get("podIPs") or []
    ip = (ips[0] or {}).get("ip") if ips else None
    return ip or st.get("podIP") or NONE


def readiness_gates(pod: dict) -> str:
    """`<true>/<gates>`, `<none>` for a pod without readiness gates."""
    gates = _spec(pod).get("readinessGates") or []
    if not gates:
        return NONE
    conds: dict[str, Any] = {}
    for c in _status(pod).get("conditions") or []:
        conds.setdefault(c.get("type"), c.get("status"))
    ok = sum(1 for g in gates if conds.get(g.get("conditionType")) == "True")
    return f"{ok}/{len(gates)}"


def pod_row_conditions(pod: dict) -> list[dict] | None:
    """The Table row's `conditions`: `Completed` for a pod that succeeded or failed."""
    phase = _status(pod).get("phase")
    if phase == "Succeeded":
        return [{"type": "Completed", "status": "True", "reason": "Succeeded",
                 "message": "The pod has completed successfully."}]
    if phase == "Failed":
        return [{"type": "Completed", "status": "True", "reason": "Failed", "message": "The pod failed."}]
    return None


# --- nodes ------------------------------------------------------------------------------

def node_status(node: dict) -> str:
    """`Ready`, `NotReady` (False or Unknown), `Unknown` (no Ready condition), `,SchedulingDisabled`."""
    parts = []
    for cond in _status(node).get("conditions") or []:
        if cond.get("type") == "Ready":
            parts.append("Ready" if cond.get("status") == "True" else "NotReady")
            break
    if not parts:
        parts.append("Unknown")
    if _spec(node).get("unschedulable"):
        parts.append("SchedulingDisabled")
    return ",".join(parts)


def node_roles(node: dict) -> str:
    """The sorted roles from `node-role.kubernetes.io/<role>` labels and `kubernetes.io/role`."""
    roles = set()
    for k, v in (meta(node).get("labels") or {}).items():
        if k.startswith("node-role.kubernetes.io/"):
            role = k[len("node-role.kubernetes.io/"):]
            if role:
                roles.add(role)
        elif k == "kubernetes.io/role" and v:
            roles.add(v)
    return ",".join(sorted(roles)) if roles else NONE


def node_address(node: dict, kind: str) -> str:
    for a in _status(node).get("addresses") or []:
        if a.get("type") == kind:
            return a.get("address") or NONE
    return NONE


def node_info(node: dict, key: str, missing: str = UNKNOWN) -> str:
    return (_status(node).get("nodeInfo") or {}).get(key) or missing


# --- workloads --------------------------------------------------------------------------

def _template_containers(obj: dict) -> list[dict]:
    return ((_spec(obj).get("template") or {}).get("spec") or {}).get("containers") or []


def container_names(obj: dict) -> str:
    return ",".join(c.get("name", "") for c in _template_containers(obj))


def container_images(obj: dict) -> str:
    return ",".join(c.get("image", "") for c in _template_containers(obj))


def spec_replicas(obj: dict) -> int:
    """`spec.replicas`, 1 when unset (the default every stored object has)."""
    r = _spec(obj).get("replicas")
    return 1 if r is None else _int(r)


# --- events -----------------------------------------------------------------------------

def event_object(ev: dict) -> str:
    """`pod/web-1`: the involved object's lower-case kind and name (the kind alone without a name)."""
    io = ev.get("involvedObject") or {}
    kind = (io.get("kind") or "").lower()
    return f"{kind}/{io['name']}" if io.get("name") else kind


def event_source(ev: dict) -> str:
    """`component, host` (the reporting controller and instance when source is unset)."""
    src = ev.get("source") or {}
    component = src.get("component") or ev.get("reportingComponent") or ""
    instance = src.get("host") or ev.get("reportingInstance") or ""
    return f"{component}, {instance}" if instance else component


def event_first_seen(ev: dict, now: datetime) -> str:
    return since(ev.get("firstTimestamp") or ev.get("eventTime"), now)


def event_last_seen(ev: dict, now: datetime) -> str:
    """LAST SEEN of Kubernetes' event table: the series' last observation, else lastTimestamp,
    else the first sighting."""
    series = ev.get("series")
    if series:
        return since(series.get("lastObservedTime"), now)
    if ev.get("lastTimestamp"):
        return since(ev["lastTimestamp"], now)
    return event_first_seen(ev, now)


def event_count(ev: dict) -> int:
    series = ev.get("series")
    if series:
        return _int(series.get("count"))
    return _int(ev.get("count")) or 1       # singleton events of the new API carry no count


# --- services -------------------------------------------------------------------------------

def format_labels(labels: dict | None) -> str:
    """labels.FormatLabels: `a=1,b=2` sorted by key, `<none>` for none."""
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items())) or NONE


def service_cluster_ip(svc: dict) -> str:
    ips = _spec(svc).get("clusterIPs") or []
    return ips[0] if ips else NONE


def service_external_ip(svc: dict) -> str:
    """getServiceExternalIP: the externalIPs, and a LoadBalancer's ingress addresses before
    them (`<pending>` until it has some); `<none>` when there are none."""
    spec = _spec(svc)
    kind = spec.get("type") or "ClusterIP"
    external = list(spec.get("externalIPs") or [])
    if kind in ("ClusterIP", "NodePort"):
        return ",".join(external) or NONE
    if kind == "LoadBalancer":
        found = set()
        for ing in ((_status(svc).get("loadBalancer") or {}).get("ingress") or []):
            if ing.get("ip"):
                found.add(ing["ip"])
            elif ing.get("hostname"):
                found.add(ing["hostname"])
        return ",".join(sorted(found) + external) or "<pending>"
    if kind == "ExternalName":
        return spec.get("externalName") or ""
    return UNKNOWN


def service_ports(svc: dict) -> str:
    """makePortString: `80/TCP`, `80:30080/TCP` with a node port, comma-joined; `<none>`."""
    out = []
    for p in _spec(svc).get("ports") or []:
        proto = p.get("protocol") or "TCP"
        out.append(f"{p.get('port')}:{p['nodePort']}/{proto}" if p.get("nodePort") else f"{p.get('port')}/{proto}")
    return ",".join(out) or NONE


def _host_port(ip: str, port: object) -> str:
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def endpoints_summary(ep: dict, *, most: int = 3) -> str:
    """formatEndpoints: the ready addresses with each port (`10.244.1.5:8080`), the first
    three and `+ N more...`; `<none>` without subsets."""
    subsets = ep.get("subsets") or []
    if not subsets:
        return NONE
    shown: list[str] = []
    count, more = 0, False
    for ss in subsets:
        addrs = [a.get("ip", "") for a in ss.get("addresses") or []]
        ports = ss.get("ports") or []
        for port in ports or [None]:
            count += len(addrs)
            for ip in addrs:
                if len(shown) == most:
                    more = True
                    break
                shown.append(ip if port is None else _host_port(ip, port.get("port")))
    text = ",".join(shown)
    return f"{text} + {count - most} more..." if more else text


def _list_with_more(items: list[str], *, most: int = 3) -> str:
    text = ",".join(items[:most])
    if len(items) > most:
        return f"{text} + {len(items) - most} more..."
    return text or "<unset>"


def slice_ports(es: dict) -> str:
    """formatDiscoveryPorts: each port's number (its name without one, else `*`)."""
    return _list_with_more([str(p["port"]) if p.get("port") is not None else (p.get("name") if p.get("name") is not None
                                                                               else "*")
                            for p in es.get("ports") or []])


def slice_endpoints(es: dict) -> str:
    """formatDiscoveryEndpoints: every endpoint's addresses, the first three and `+ N more...`."""
    return _list_with_more([a for e in es.get("endpoints") or [] for a in e.get("addresses") or []])


# --- column tables ----------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    """One column of a kind's table, as a Table's `columnDefinitions` entry describes it."""
    name: str                                   # Kubernetes' spelling: "Up-to-date", "Nominated Node"
    cell: Callable[[dict, datetime], Cell]
    type: str = "string"                        # "string" | "integer" | "date"
    priority: int = 0                           # 1: -o wide only
    format: str = ""                            # "name": the column kubectl prefixes with the kind
    description: str = ""

    def definition(self) -> dict:
        return {"name": self.name, "type": self.type, "format": self.format, "description": self.description,
                "priority": self.priority}


def _name(obj: dict, now: datetime) -> str:
    return meta(obj).get("name", "")


def _age(obj: dict, now: datetime) -> str:
    return age(obj, now)


NAME = Column("Name", _name, format="name", description="The object's name, unique in its namespace.")
AGE = Column("Age", _age, description="Time since the object was created.")


def _wide(name: str, fn: Callable[[dict], Cell], description: str) -> Column:
    return Column(name, lambda o, now: fn(o), priority=1, description=description)


# the -o wide columns of Deployments and ReplicaSets
_WORKLOAD_WIDE = (
    _wide("Containers", container_names, "The names of the pod template's containers."),
    _wide("Images", container_images, "The images of the pod template's containers."),
    _wide("Selector", lambda o: selector_string(_spec(o).get("selector")), "The label selector of the pods."),
)

COLUMNS: dict[str, tuple[Column, ...]] = {
    "Pod": (
        NAME,
        Column("Ready", lambda o, now: pod_summary(o, now).ready,
               description="Ready containers out of all containers."),
        Column("Status", lambda o, now: pod_summary(o, now).status,
               description="What the pod is doing, as kubectl summarizes its containers' states."),
        Column("Restarts", lambda o, now: pod_summary(o, now).restarts,
               description="Container restarts, and how long ago the last one was."),
        AGE,
        _wide("IP", pod_ip, "The pod's IP address."),
        _wide("Node", lambda o: _spec(o).get("nodeName") or NONE, "The node the pod is bound to."),
        _wide("Nominated Node", lambda o: _status(o).get("nominatedNodeName") or NONE,
              "The node nominated by preemption (shoal's scheduler never nominates)."),
        _wide("Readiness Gates", readiness_gates, "Readiness gates that are true out of all of them."),
    ),
    "Deployment": (
        NAME,
        Column("Ready", lambda o, now: f"{_int(_status(o).get('readyReplicas'))}/{spec_replicas(o)}",
               description="Ready pods out of the desired replicas."),
        Column("Up-to-date", lambda o, now: _int(_status(o).get("updatedReplicas")),
               description="Pods of the current pod template."),
        Column("Available", lambda o, now: _int(_status(o).get("availableReplicas")),
               description="Pods ready for at least minReadySeconds."),
        AGE,
        *_WORKLOAD_WIDE,
    ),
    "ReplicaSet": (
        NAME,
        Column("Desired", lambda o, now: spec_replicas(o), type="integer", description="The desired replicas."),
        Column("Current", lambda o, now: _int(_status(o).get("replicas")), type="integer",
               description="The pods that exist."),
        Column("Ready", lambda o, now: _int(_status(o).get("readyReplicas")), type="integer",
               description="The pods that are ready."),
        AGE,
        *_WORKLOAD_WIDE,
    ),
    "Node": (
        NAME,
        Column("Status", lambda o, now: node_status(o), description="Ready, NotReady or Unknown; "
               "SchedulingDisabled when cordoned."),
        Column("Roles", lambda o, now: node_roles(o), description="Roles from node-role.kubernetes.io/ labels."),
        AGE,
        Column("Version", lambda o, now: node_info(o, "kubeletVersion", ""), description="The agent's version."),
        _wide("Internal-IP", lambda o: node_address(o, "InternalIP"), "The node's internal address."),
        _wide("External-IP", lambda o: node_address(o, "ExternalIP"), "The node's external address."),
        _wide("OS-Image", lambda o: node_info(o, "osImage"), "The operating system."),
        _wide("Kernel-Version", lambda o: node_info(o, "kernelVersion"), "The kernel release."),
        _wide("Container-Runtime", lambda o: node_info(o, "containerRuntimeVersion"), "The container runtime."),
    ),
    "Namespace": (
        NAME,
        Column("Status", lambda o, now: _status(o).get("phase") or "", description="Active or Terminating."),
        AGE,
    ),
    "Event": (
        Column("Last Seen", event_last_seen, description="When the event was last seen."),
        Column("Type", lambda o, now: o.get("type") or "", description="Normal or Warning."),
        Column("Reason", lambda o, now: o.get("reason") or "", description="Why the event happened, in one word."),
        Column("Object", lambda o, now: event_object(o), description="The object the event is about."),
        _wide("Subobject", lambda o: (o.get("involvedObject") or {}).get("fieldPath") or "",
              "The part of the object, such as a container."),
        _wide("Source", event_source, "The component (and host) that reported the event."),
        Column("Message", lambda o, now: (o.get("message") or "").strip(), description="What happened."),
        Column("First Seen", event_first_seen, priority=1, description="When the event was first seen."),
        Column("Count", lambda o, now: event_count(o), priority=1, description="How often the event was seen."),
        Column("Name", _name, priority=1, format="name", description="The event's name."),
    ),
    "Lease": (
        NAME,
        Column("Holder", lambda o, now: _spec(o).get("holderIdentity") or "", description="Who holds the lease."),
        AGE,
    ),
    "Service": (
        NAME,
        Column("Type", lambda o, now: _spec(o).get("type") or "", description="ClusterIP, NodePort or LoadBalancer."),
        Column("Cluster-IP", lambda o, now: service_cluster_ip(o), description="The virtual IP of the Service."),
        Column("External-IP", lambda o, now: service_external_ip(o),
               description="The load balancer's addresses: the nodes' addresses (ServiceLB)."),
        Column("Port(s)", lambda o, now: service_ports(o), description="Port/protocol, with the node port."),
        AGE,
        _wide("Selector", lambda o: format_labels(_spec(o).get("selector")), "The pods the Service sends to."),
    ),
    "Endpoints": (
        NAME,
        Column("Endpoints", lambda o, now: endpoints_summary(o), description="The ready addresses and ports."),
        AGE,
    ),
    "EndpointSlice": (
        NAME,
        Column("AddressType", lambda o, now: o.get("addressType") or "", description="IPv4, IPv6 or FQDN."),
        Column("Ports", lambda o, now: slice_ports(o), description="The ports of the endpoints."),
        Column("Endpoints", lambda o, now: slice_endpoints(o), description="The endpoints' addresses."),
        AGE,
    ),
    "ConfigMap": (
        NAME,
        Column("Data", lambda o, now: len(o.get("data") or {}) + len(o.get("binaryData") or {}),
               description="The number of keys."),
        AGE,
    ),
    "Secret": (
        NAME,
        Column("Type", lambda o, now: o.get("type") or "", description="The secret's type."),
        Column("Data", lambda o, now: len(o.get("data") or {}), description="The number of keys."),
        AGE,
    ),
}

# Kubernetes' default table for a kind without printers: name and creation time (RFC 3339).
DEFAULT_COLUMNS: tuple[Column, ...] = (
    NAME,
    Column("Created At", lambda o, now: meta(o).get("creationTimestamp") or "", type="date",
           description="When the object was created."),
)


def columns(kind: str) -> tuple[Column, ...]:
    """All columns of `kind`'s table (priority 0 and 1), in order."""
    return COLUMNS.get(kind, DEFAULT_COLUMNS)


def cells(kind: str, obj: dict, now: datetime) -> list[Cell]:
    """One row's cells, one per column of `columns(kind)`."""
    return [c.cell(obj, now) for c in columns(kind)]


def row_conditions(kind: str, obj: dict) -> list[dict] | None:
    """A row's `conditions` (Kubernetes sets them for finished pods only)."""
    return pod_row_conditions(obj) if kind == "Pod" else None
