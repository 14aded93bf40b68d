"""`shoal describe KIND NAME`: kubectl-style descriptions, built as pure functions of objects.

Each describer takes the object plus the related objects the command fetched
(events with fieldSelector `involvedObject.uid=...`, ReplicaSets, pods on a
node) and `now`, and returns text. The layout follows kubectl's describe
(pkg/describe/describe.go): `Label:\tvalue` lines at two-space levels, all
aligned by one Go-tabwriter pass with minwidth 0 and padding 2, so lines
without a tab end a column block exactly as they do in kubectl.
"""
from __future__ import annotations

from datetime import datetime
from typing import Any

from shoal.machinery.api.defaults import (DEFAULT_DEPLOYMENT_STRATEGY, DEFAULT_HTTP_GET_SCHEME, DEFAULT_MAX_SURGE,
                                          DEFAULT_MAX_UNAVAILABLE, DEFAULT_MIN_READY_SECONDS,
                                          DEFAULT_PROBE_FAILURE_THRESHOLD, DEFAULT_PROBE_PERIOD_SECONDS,
                                          DEFAULT_PROBE_SUCCESS_THRESHOLD, DEFAULT_PROBE_TIMEOUT_SECONDS,
                                          DEFAULT_REPLICAS, DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS)
from shoal.machinery.api.objects import controller_ref, meta
from shoal.machinery.api.podtemplate import find_new_replicaset
from shoal.machinery.api.times import parse_datetime

from shoal.cli.printers import NONE, event_sort_key, format_labels, format_selector, node_status, pod_summary, since
from shoal.cli.rollout import controlled_by
from shoal.cli.tabwriter import describe_text


class Lines:
    """kubectl's PrefixWriter: `w(level, "Name:", value)` → `  ` * level + cells joined by tabs."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, level: int, *cells: Any) -> None:
        self.lines.append("  " * level + "\t".join(str(c) for c in cells))

    def multiline(self, level: int, title: str, values: list[str]) -> None:
        """kubectl's printLabelsMultiline: first value beside the title, the rest below it."""
        if not values:
            self(level, title, NONE)
            return
        self(level, title, values[0])
        for v in values[1:]:
            self(level, "", v)

    def text(self) -> str:
        return describe_text(self.lines)


def rfc1123(ts: str | None) -> str:
    t = parse_datetime(ts)
    return t.strftime("%a, %d %b %Y %H:%M:%S %z") if t else "<unknown>"


def _labels(o: dict) -> list[str]:
    return [f"{k}={v}" for k, v in sorted((meta(o).get("labels") or {}).items())]


def _annotations(o: dict, skip: tuple[str, ...] = ("kubectl.kubernetes.io/last-applied-configuration",)) -> list[str]:
    return [f"{k}: {v}" for k, v in sorted((meta(o).get("annotations") or {}).items()) if k not in skip]


def _controller(o: dict) -> str | None:
    ref = controller_ref(o)
    return f"{ref.get('kind')}/{ref.get('name')}" if ref is not None else None


def describe_events(w: Lines, events: list[dict], now: datetime) -> None:
    if not events:
        w(0, "Events:", NONE)
        return
    w(0, "Events:")
    w(1, "Type", "Reason", "Age", "From", "Message")
    w(1, "----", "------", "----", "----", "-------")
    for e in sorted(events, key=event_sort_key):
        first = since(e.get("firstTimestamp") or e.get("eventTime") or meta(e).get("creationTimestamp"), now)
        count = int(e.get("count") or 0)
        interval = f"{since(e.get('lastTimestamp'), now)} (x{count} over {first})" if count > 1 else first
        source = (e.get("source") or {}).get("component") or e.get("reportingComponent") or ""
        w(1, e.get("type", ""), e.get("reason", ""), interval, source, (e.get("message") or "").strip())


# --- containers and probes ------------------------------------------------------------------

def format_probe(p: dict) -> str:
    """`http-get http://:8080/healthz delay=0s timeout=1s period=10s #success=1 #failure=3`."""
    if "httpGet" in p:
        h = p["httpGet"]
        scheme = (h.get("scheme") or DEFAULT_HTTP_GET_SCHEME).lower()
        what = f"http-get {scheme}://{h.get('host', '')}:{h.get('port', '')}{h.get('path', '')}"
    elif "tcpSocket" in p:
        what = f"tcp-socket {p['tcpSocket'].get('host', '')}:{p['tcpSocket'].get('port', '')}"
    elif "exec" in p:
        what = f"exec [{' '.join((p['exec'] or {}).get('command') or [])}]"
    else:
        what = "unknown"
    timeout = int(p.get("timeoutSeconds") or DEFAULT_PROBE_TIMEOUT_SECONDS)
    period = int(p.get("periodSeconds") or DEFAULT_PROBE_PERIOD_SECONDS)
    success = int(p.get("successThreshold") or DEFAULT_PROBE_SUCCESS_THRESHOLD)
    failure = int(p.get("failureThreshold") or DEFAULT_PROBE_FAILURE_THRESHOLD)
    return (f"{what} delay={int(p.get('initialDelaySeconds') or 0)}s timeout={timeout}s period={period}s "
            f"#success={success} #failure={failure}")


def _state_lines(w: Lines, level: int, title: str, state: dict) -> None:
    if not state:
        if title == "State:":
            w(level, title, "Waiting")
        return
    if "running" in state:
        w(level, title, "Running")
        w(level + 1, "Started:", rfc1123((state["running"] or {}).get("startedAt")))
    elif "waiting" in state:
        w(level, title, "Waiting")
        if (state["waiting"] or {}).get("reason"):
            w(level + 1, "Reason:", state["waiting"]["reason"])
        if (state["waiting"] or {}).get("message"):
            w(level + 1, "Message:", state["waiting"]["message"])
    elif "terminated" in state:
        t = state["terminated"] or {}
        w(level, title, "Terminated")
        if t.get("reason"):
            w(level + 1, "Reason:", t["reason"])
        if t.get("message"):
            w(level + 1, "Message:", t["message"])
        w(level + 1, "Exit Code:", t.get("exitCode", 0))
        if t.get("signal"):
            w(level + 1, "Signal:", t["signal"])
        w(level + 1, "Started:", rfc1123(t.get("startedAt")))
        w(level + 1, "Finished:", rfc1123(t.get("finishedAt")))


def _ports(c: dict) -> str:
    ports = c.get("ports") or []
    if not ports:
        return NONE
    return ", ".join(f"{p.get('containerPort')}/{p.get('protocol', 'TCP')}" for p in ports)


def _resources(w: Lines, level: int, c: dict) -> None:
    res = c.get("resources") or {}
    for title, key in (("Limits:", "limits"), ("Requests:", "requests")):
        vals = res.get(key) or {}
        if vals:
            w(level, title)
            for k, v in sorted(vals.items()):
                w(level + 1, f"{k}:", v)


def _env(w: Lines, level: int, c: dict) -> None:
    env = c.get("env") or []
    if not env:
        w(level, "Environment:", NONE)
        return
    w(level, "Environment:")
    for e in env:
        if "value" in e:
            w(level + 1, f"{e.get('name')}:", e.get("value"))
        else:
            w(level + 1, f"{e.get('name')}:", "(set from a reference)")


def describe_container(w: Lines, level: int, c: dict, status: dict | None, *, in_template: bool = False) -> None:
    # kubectl indents a template's container names by one extra space (` web:` under `Containers:`)
    w(level, f"{' ' if in_template else ''}{c.get('name')}:")
    lv = level + 1
    if status is not None and status.get("containerID"):
        w(lv, "Container ID:", status["containerID"])
    w(lv, "Image:", c.get("image", ""))
    if status is not None:
        w(lv, "Image ID:", status.get("imageID") or "")
    w(lv, "Port:", _ports(c))
    if c.get("command"):
        w(lv, "Command:")
        for part in c["command"]:
            w(lv + 1, part)
    if c.get("args"):
        w(lv, "Args:")
        for part in c["args"]:
            w(lv + 1, part)
    if status is not None:
        _state_lines(w, lv, "State:", status.get("state") or {})
        if status.get("lastState"):
            _state_lines(w, lv, "Last State:", status["lastState"])
        w(lv, "Ready:", "True" if status.get("ready") else "False")
        w(lv, "Restart Count:", int(status.get("restartCount") or 0))
    _resources(w, lv, c)
    for title, key in (("Liveness:", "livenessProbe"), ("Readiness:", "readinessProbe"), ("Startup:", "startupProbe")):
        if c.get(key):
            w(lv, title, format_probe(c[key]))
    _env(w, lv, c)
    mounts = c.get("volumeMounts") or []
    if mounts:
        w(lv, "Mounts:")
        for m in mounts:
            w(lv + 1, m.get("mountPath", ""), f"from {m.get('name')} ({'ro' if m.get('readOnly') else 'rw'})")
    else:
        w(lv, "Mounts:", NONE)


def describe_pod_template(w: Lines, level: int, template: dict) -> None:
    md, spec = template.get("metadata") or {}, template.get("spec") or {}
    w.multiline(level, "Labels:", [f"{k}={v}" for k, v in sorted((md.get("labels") or {}).items())])
    ann = [f"{k}: {v}" for k, v in sorted((md.get("annotations") or {}).items())]
    if ann:
        w.multiline(level, "Annotations:", ann)
    w(level, "Containers:")
    for c in spec.get("containers") or []:
        describe_container(w, level, c, None, in_template=True)
    w(level, "Volumes:", NONE if not spec.get("volumes") else ", ".join(v.get("name", "") for v in spec["volumes"]))
    w(level, "Node-Selectors:", format_labels(spec.get("nodeSelector")))
    w(level, "Tolerations:", NONE if not spec.get("tolerations") else
      ", ".join(f"{t.get('key', '')}:{t.get('effect', '')}" for t in spec["tolerations"]))


def _conditions(w: Lines, conds: list[dict], *, with_reason: bool) -> None:
    if not conds:
        return
    w(0, "Conditions:")
    if with_reason:
        w(1, "Type", "Status", "Reason")
        w(1, "----", "------", "------")
        for c in conds:
            w(1, c.get("type", ""), c.get("status", ""), c.get("reason", ""))
    else:
        w(1, "Type", "Status")
        for c in conds:
            w(1, c.get("type", ""), c.get("status", ""))


# --- kinds --------------------------------------------------------------------------------------

def describe_pod(pod: dict, events: list[dict], now: datetime) -> str:
    md, spec, st = meta(pod), pod.get("spec") or {}, pod.get("status") or {}
    w = Lines()
    w(0, "Name:", md.get("name", ""))
    w(0, "Namespace:", md.get("namespace", ""))
    w(0, "Priority:", spec.get("priority", 0))
    node = spec.get("nodeName")
    w(0, "Node:", f"{node}/{st.get('hostIP', '')}" if node and st.get("hostIP") else (node or NONE))
    if st.get("startTime"):
        w(0, "Start Time:", rfc1123(st["startTime"]))
    w.multiline(0, "Labels:", _labels(pod))
    w.multiline(0, "Annotations:", _annotations(pod))
    if md.get("deletionTimestamp"):
        w(0, "Status:", f"Terminating (lasts {since(md['deletionTimestamp'], now)})")
        grace = spec.get("terminationGracePeriodSeconds", DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS)
        w(0, "Termination Grace Period:", f"{grace}s")
    else:
        w(0, "Status:", st.get("phase") or "Pending")
    if st.get("reason"):
        w(0, "Reason:", st["reason"])
    if st.get("message"):
        w(0, "Message:", st["message"])
    w(0, "IP:", st.get("podIP") or "")
    ips = st.get("podIPs") or ([{"ip": st["podIP"]}] if st.get("podIP") else [])
    if ips:
        w(0, "IPs:")
        for ip in ips:
            w(1, "IP:", ip.get("ip", ""))
    else:
        w(0, "IPs:", NONE)
    ctrl = _controller(pod)
    if ctrl:
        w(0, "Controlled By:", ctrl)
    statuses = {s.get("name"): s for s in st.get("containerStatuses") or []}
    w(0, "Containers:")
    for c in spec.get("containers") or []:
        describe_container(w, 1, c, statuses.get(c.get("name"), {}))
    _conditions(w, st.get("conditions") or [], with_reason=False)
    vols = spec.get("volumes") or []
    w(0, "Volumes:", NONE if not vols else "")
    for v in vols:
        w(1, f"{v.get('name')}:")
        kinds = [k for k in v if k != "name"]
        w(2, "Type:", kinds[0] if kinds else "<unknown>")
    w(0, "QoS Class:", st.get("qosClass") or "BestEffort")
    w(0, "Node-Selectors:", format_labels(spec.get("nodeSelector")))
    tol = spec.get("tolerations") or []
    w.multiline(0, "Tolerations:", [
        f"{t.get('key', '')}{'=' + t['value'] if t.get('value') else ''}:{t.get('effect', '')}"
        + (f" op={t['operator']}" if t.get("operator") else "")
        + (f" for {t['tolerationSeconds']}s" if t.get("tolerationSeconds") is not None else "") for t in tol])
    describe_events(w, events, now)
    return w.text()


def describe_deployment(deploy: dict, replicasets: list[dict], events: list[dict], now: datetime) -> str:
    md, spec, st = meta(deploy), deploy.get("spec") or {}, deploy.get("status") or {}
    w = Lines()
    w(0, "Name:", md.get("name", ""))
    w(0, "Namespace:", md.get("namespace", ""))
    w(0, "CreationTimestamp:", rfc1123(md.get("creationTimestamp")))
    w.multiline(0, "Labels:", _labels(deploy))
    w.multiline(0, "Annotations:", _annotations(deploy))
    w(0, "Selector:", format_selector(spec.get("selector")))
    replicas = DEFAULT_REPLICAS if spec.get("replicas") is None else int(spec["replicas"])
    w(0, "Replicas:", f"{replicas} desired | {int(st.get('updatedReplicas') or 0)} updated | "
                      f"{int(st.get('replicas') or 0)} total | {int(st.get('availableReplicas') or 0)} available | "
                      f"{int(st.get('unavailableReplicas') or 0)} unavailable")
    strategy = spec.get("strategy") or {}
    stype = strategy.get("type") or DEFAULT_DEPLOYMENT_STRATEGY
    w(0, "StrategyType:", stype)
    w(0, "MinReadySeconds:", int(spec.get("minReadySeconds") or DEFAULT_MIN_READY_SECONDS))
    if stype == "RollingUpdate":
        ru = strategy.get("rollingUpdate") or {}
        w(0, "RollingUpdateStrategy:", f"{ru.get('maxUnavailable', DEFAULT_MAX_UNAVAILABLE)} max unavailable, "
                                       f"{ru.get('maxSurge', DEFAULT_MAX_SURGE)} max surge")
    if spec.get("paused"):
        w(0, "Paused:", "true")
    w(0, "Pod Template:")
    describe_pod_template(w, 1, spec.get("template") or {})
    _conditions(w, st.get("conditions") or [], with_reason=True)
    owned = [rs for rs in replicasets if controlled_by(rs, deploy)]
    new_rs = find_new_replicaset(spec.get("template"), owned)      # the one the controller scales
    old = [rs for rs in owned if rs is not new_rs and int((rs.get("spec") or {}).get("replicas") or 0) > 0]

    def rs_line(rs: dict) -> str:
        return (f"{meta(rs).get('name')} ({int((rs.get('status') or {}).get('replicas') or 0)}/"
                f"{int((rs.get('spec') or {}).get('replicas') or 0)} replicas created)")
    w(0, "OldReplicaSets:", ", ".join(rs_line(r) for r in old) if old else NONE)
    w(0, "NewReplicaSet:", rs_line(new_rs) if new_rs else NONE)
    describe_events(w, events, now)
    return w.text()


def describe_replicaset(rs: dict, pods: list[dict], events: list[dict], now: datetime) -> str:
    md, spec, st = meta(rs), rs.get("spec") or {}, rs.get("status") or {}
    w = Lines()
    w(0, "Name:", md.get("name", ""))
    w(0, "Namespace:", md.get("namespace", ""))
    w(0, "Selector:", format_selector(spec.get("selector")))
    w.multiline(0, "Labels:", _labels(rs))
    w.multiline(0, "Annotations:", _annotations(rs))
    ctrl = _controller(rs)
    if ctrl:
        w(0, "Controlled By:", ctrl)
    replicas = DEFAULT_REPLICAS if spec.get("replicas") is None else int(spec["replicas"])
    w(0, "Replicas:", f"{int(st.get('replicas') or 0)} current / {replicas} desired")
    phases = {"Running": 0, "Pending": 0, "Succeeded": 0, "Failed": 0}
    for p in pods:
        ph = (p.get("status") or {}).get("phase") or "Pending"
        phases[ph] = phases.get(ph, 0) + 1
    w(0, "Pods Status:", f"{phases['Running']} Running / {phases['Pending']} Waiting / "
                         f"{phases['Succeeded']} Succeeded / {phases['Failed']} Failed")
    w(0, "Pod Template:")
    describe_pod_template(w, 1, spec.get("template") or {})
    _conditions(w, st.get("conditions") or [], with_reason=True)
    describe_events(w, events, now)
    return w.text()


def describe_node(node: dict, pods: list[dict], events: list[dict], now: datetime) -> str:
    md, spec, st = meta(node), node.get("spec") or {}, node.get("status") or {}
    w = Lines()
    w(0, "Name:", md.get("name", ""))
    w(0, "Status:", node_status(node))
    w.multiline(0, "Labels:", _labels(node))
    w.multiline(0, "Annotations:", _annotations(node))
    w(0, "CreationTimestamp:", rfc1123(md.get("creationTimestamp")))
    taints = spec.get("taints") or []
    w.multiline(0, "Taints:", [f"{t.get('key')}{'=' + t['value'] if t.get('value') else ''}:{t.get('effect')}"
                               for t in taints])
    w(0, "Unschedulable:", "true" if spec.get("unschedulable") else "false")
    conds = st.get("conditions") or []
    w(0, "Conditions:")
    w(1, "Type", "Status", "LastHeartbeatTime", "LastTransitionTime", "Reason", "Message")
    w(1, "----", "------", "-----------------", "------------------", "------", "-------")
    for c in conds:
        w(1, c.get("type", ""), c.get("status", ""), rfc1123(c.get("lastHeartbeatTime")),
          rfc1123(c.get("lastTransitionTime")), c.get("reason", ""), c.get("message", ""))
    w(0, "Addresses:")
    for a in st.get("addresses") or []:
        w(1, f"{a.get('type')}:", a.get("address", ""))
    for title, key in (("Capacity:", "capacity"), ("Allocatable:", "allocatable")):
        vals = st.get(key) or {}
        w(0, title)
        for k, v in sorted(vals.items()):
            w(1, f"{k}:", v)
    info = st.get("nodeInfo") or {}
    if info:
        w(0, "System Info:")
        for label, key in (("Machine ID:", "machineID"), ("Boot ID:", "bootID"), ("Kernel Version:", "kernelVersion"),
                           ("OS Image:", "osImage"), ("Operating System:", "operatingSystem"),
                           ("Architecture:", "architecture"), ("Container Runtime Version:", "containerRuntimeVersion"),
                           ("Kubelet Version:", "kubeletVersion")):
            if key in info:
                w(1, label, info[key])
    w(0, "PodCIDR:", spec.get("podCIDR") or NONE)
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    w(0, "PodCIDRs:", ",".join(cidrs) if cidrs else NONE)
    live = [p for p in pods if (p.get("status") or {}).get("phase") not in ("Succeeded", "Failed")]
    w(0, "Non-terminated Pods:", f"({len(live)} in total)")
    if live:
        w(1, "Namespace", "Name", "CPU Requests", "Memory Requests", "Status", "Age")
        w(1, "---------", "----", "------------", "---------------", "------", "---")
        for p in sorted(live, key=lambda p: (meta(p).get("namespace", ""), meta(p).get("name", ""))):
            req: dict[str, str] = {}
            for c in (p.get("spec") or {}).get("containers") or []:
                for k, v in ((c.get("resources") or {}).get("requests") or {}).items():
                    req[k] = v if k not in req else f"{req[k]}+{v}"
            w(1, meta(p).get("namespace", ""), meta(p).get("name", ""), req.get("cpu", "0"),
              req.get("memory", "0"), pod_summary(p, now).status, since(meta(p).get("creationTimestamp"), now))
    describe_events(w, events, now)
    return w.text()


def format_slice_endpoints(slices: list[dict], port_name: str | None, *, most: int = 3) -> str:
    """kubectl's formatEndpointSlices: the ready endpoints of `slices` as `ip:port` for the
    Service port named `port_name` (None: every port; a slice without ports lists its
    addresses), the first three and `+ N more...`; `<none>` without slices."""
    if not slices:
        return NONE
    shown: list[str] = []
    count, more = 0, False
    for slc in slices:
        ports = slc.get("ports") or []
        targets = [None] if not ports else [p for p in ports if port_name is None or (p.get("name") or "") == port_name]
        for port in targets:
            for ep in slc.get("endpoints") or []:
                if len(shown) == most:
                    more = True
                ready = (ep.get("conditions") or {}).get("ready")
                addrs = ep.get("addresses") or []
                if not more and ready is not False and addrs:
                    ip = addrs[0]
                    if port is None:
                        shown.append(ip)
                    else:
                        shown.append(f"[{ip}]:{port.get('port')}" if ":" in ip else f"{ip}:{port.get('port')}")
                count += 1
    text = ",".join(shown)
    return f"{text} + {count - most} more..." if more else text


def _ingress(ingress: list[dict]) -> str:
    """buildIngressString: each address (or host name) with its ipMode."""
    return ", ".join((i.get("ip") or i.get("hostname") or "") + (f" ({i['ipMode']})" if i.get("ipMode") else "")
                     for i in ingress)


def describe_service(svc: dict, slices: list[dict], events: list[dict], now: datetime) -> str:
    """kubectl describe service: the spec, the load balancer's addresses and, per port, the
    ready endpoints from the Service's EndpointSlices."""
    md, spec, st = meta(svc), svc.get("spec") or {}, svc.get("status") or {}
    w = Lines()
    w(0, "Name:", md.get("name", ""))
    w(0, "Namespace:", md.get("namespace", ""))
    w.multiline(0, "Labels:", _labels(svc))
    w.multiline(0, "Annotations:", _annotations(svc))
    w(0, "Selector:", format_labels(spec.get("selector")))
    w(0, "Type:", spec.get("type", ""))
    if spec.get("ipFamilyPolicy"):
        w(0, "IP Family Policy:", spec["ipFamilyPolicy"])
    w(0, "IP Families:", ",".join(spec.get("ipFamilies") or []) or NONE)
    w(0, "IP:", spec.get("clusterIP", ""))
    w(0, "IPs:", ",".join(spec.get("clusterIPs") or []) or NONE)
    if spec.get("externalIPs"):
        w(0, "External IPs:", ",".join(spec["externalIPs"]))
    ingress = (st.get("loadBalancer") or {}).get("ingress") or []
    if ingress:
        w(0, "LoadBalancer Ingress:", _ingress(ingress))
    for p in spec.get("ports") or []:
        name = p.get("name") or "<unset>"
        proto = p.get("protocol") or "TCP"
        w(0, "Port:", name, f"{p.get('port')}/{proto}")
        w(0, "TargetPort:", f"{p.get('targetPort', p.get('port'))}/{proto}")
        if p.get("nodePort"):
            w(0, "NodePort:", name, f"{p['nodePort']}/{proto}")
        w(0, "Endpoints:", format_slice_endpoints(slices, p.get("name") or ""))
    if not spec.get("ports"):
        w(0, "Endpoints:", format_slice_endpoints(slices, None))
    w(0, "Session Affinity:", spec.get("sessionAffinity", ""))
    if spec.get("externalTrafficPolicy"):
        w(0, "External Traffic Policy:", spec["externalTrafficPolicy"])
    if spec.get("internalTrafficPolicy"):
        w(0, "Internal Traffic Policy:", spec["internalTrafficPolicy"])
    if spec.get("healthCheckNodePort"):
        w(0, "HealthCheck NodePort:", spec["healthCheckNodePort"])
    describe_events(w, events, now)
    return w.text()


def describe_generic(obj: dict, events: list[dict], now: datetime) -> str:
    """Namespaces, leases, events: metadata, then spec/status fields flattened."""
    md = meta(obj)
    w = Lines()
    w(0, "Name:", md.get("name", ""))
    if md.get("namespace"):
        w(0, "Namespace:", md["namespace"])
    w.multiline(0, "Labels:", _labels(obj))
    w.multiline(0, "Annotations:", _annotations(obj))
    w(0, "CreationTimestamp:", rfc1123(md.get("creationTimestamp")))

    def flat(level: int, title: str, v: Any) -> None:
        if isinstance(v, dict):
            w(level, f"{title}:")
            for k, x in v.items():
                flat(level + 1, k, x)
        elif isinstance(v, list):
            w(level, f"{title}:", ", ".join(str(x) for x in v) if all(not isinstance(x, (dict, list)) for x in v)
              else "")
            if any(isinstance(x, (dict, list)) for x in v):
                for i, x in enumerate(v):
                    flat(level + 1, f"[{i}]", x)
        else:
            w(level, f"{title}:", v)
    for key in ("spec", "status"):
        if obj.get(key):
            flat(0, key.capitalize(), obj[key])
    for key in ("type", "reason", "message", "involvedObject", "holderIdentity"):
        if key in obj:
            flat(0, key, obj[key])
    describe_events(w, events, now)
    return w.text()
