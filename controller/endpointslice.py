"""EndpointSlice controller: every Service with a selector gets EndpointSlices (and the legacy
Endpoints object) listing the pods it sends to, with their readiness.

Contract (per Service key, level-based — Kubernetes' endpointslice and endpoints
controllers in one reconcile):
1. The pods: those of the Service's namespace its selector matches, minus pods without an
   IP and pods that have finished (Succeeded, Failed). Terminating pods stay, so clients
   (the node proxy, the rollout drain) see them go: `ready` = Ready and not terminating,
   `serving` = Ready (terminating or not), `terminating` = deletionTimestamp set
   (publishNotReadyAddresses makes every listed pod ready and serving).
2. The ports: each Service port's `targetPort` resolved on each pod (a number, or the number
   of the container port of that name and protocol); a pod lacking a named port is no
   endpoint of that Service port. Pods are grouped by the ports they resolve to, one group
   per port mapping, as Kubernetes does: each slice has one port list.
3. The slices (`plan_slices`, pure): the existing slices this controller manages (label
   `endpointslice.kubernetes.io/managed-by: endpointslice-controller.k8s.io`) are kept
   where they still fit — endpoints that stay stay in their slice, changed ones are updated
   in place, gone ones removed, new ones fill the slices with room before new slices
   (`generateName: <service>-`) are made, at most 100 endpoints each; empty ones go. A
   Service without endpoints keeps one empty placeholder slice, as Kubernetes. Every slice
   carries the Service's labels, `kubernetes.io/service-name`, the managed-by label, the
   headless label for `clusterIP: None`, and a controller ownerReference to the Service
   (the server's cascade removes them with it).
4. The Endpoints object (`plan_endpoints`, pure): `<service>` with ready addresses in
   `addresses`, the rest in `notReadyAddresses` (terminating pods leave it, unless
   publishNotReadyAddresses), subsets grouped by port set, at most 1000 addresses
   (`endpoints.kubernetes.io/over-capacity: truncated` beyond). Labelled
   `endpoints.kubernetes.io/managed-by: endpoint-controller`: only such an object is
   deleted when its Service is gone or loses its selector; a selectorless Service's
   Endpoints (and slices) are the user's.

Writes go through `Informer.observe`, so a reconcile sees its own writes at once. A write
that loses a race (409) is retried by the queue with a fresh read.

Next: `controller.servicelb` (LoadBalancer addresses), `controller.manager`.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Iterable

from shoal.machinery.api import errors
from shoal.machinery.api.objects import (is_deleting, key_of, labels_of, meta, name_of, namespace_of, node_name_of,
                                         owner_ref_to, pod_phase, split_key, thaw, uid_of, is_pod_ready,
                                         TERMINAL_PHASES)
from shoal.machinery.api.selectors import selector_from_label_selector
from shoal.machinery.api.services import (CLUSTER_IP_NONE, ENDPOINTS_MANAGED_BY, ENDPOINTS_MANAGED_BY_LABEL,
                                          HEADLESS_LABEL, MANAGED_BY, MANAGED_BY_LABEL, MAX_ENDPOINTS_PER_ENDPOINTS,
                                          MAX_ENDPOINTS_PER_SLICE, OVER_CAPACITY_ANNOTATION, SERVICE_NAME_LABEL,
                                          is_headless, resolve_target_port)
from shoal.machinery.client.rest import Client
from shoal.machinery.control import Controller, Informer, Manager, Result

from shoal.controller import indexes

log = logging.getLogger("shoal.controller.endpointslice")

SLICE_SERVICE_INDEX = "endpointslice-service"     # slices by `namespace/service-name`


# --- pure: one pod as an endpoint -----------------------------------------------------------

def pod_ip(pod: dict) -> str:
    st = pod.get("status") or {}
    if st.get("podIP"):
        return st["podIP"]
    ips = st.get("podIPs") or []
    return (ips[0] or {}).get("ip", "") if ips else ""


def is_endpoint_candidate(pod: dict) -> bool:
    """ShouldPodBeInEndpoints(pod, includeTerminating=true): it has an IP and has not finished."""
    return bool(pod_ip(pod)) and pod_phase(pod) not in TERMINAL_PHASES


def _selects(svc: dict, pod: dict) -> bool:
    sel = (svc.get("spec") or {}).get("selector")
    if not sel or namespace_of(pod) != namespace_of(svc):
        return False
    return all(labels_of(pod).get(k) == v for k, v in sel.items())


def endpoint_ports(svc: dict, pod: dict) -> tuple[dict, ...]:
    """The slice ports `pod` serves `svc`'s ports on (getEndpointPorts): name, protocol,
    resolved port, appProtocol; a Service port the pod cannot resolve is left out."""
    out = []
    for p in (svc.get("spec") or {}).get("ports") or []:
        number = resolve_target_port(pod, p)
        if number is None:
            continue
        port = {"name": p.get("name") or "", "protocol": p.get("protocol") or "TCP", "port": number}
        if p.get("appProtocol"):
            port["appProtocol"] = p["appProtocol"]
        out.append(port)
    return tuple(out)


def _ports_key(ports: Iterable[dict]) -> tuple:
    return tuple(sorted((p.get("name") or "", p.get("protocol") or "TCP", p.get("port") or 0,
                         p.get("appProtocol") or "") for p in ports))


def _target_ref(pod: dict) -> dict:
    return {"kind": "Pod", "namespace": namespace_of(pod), "name": name_of(pod), "uid": uid_of(pod)}


def _hostname(svc: dict, pod: dict) -> str | None:
    """ShouldSetHostname: a pod that names the Service as its subdomain gets its hostname."""
    spec = pod.get("spec") or {}
    if spec.get("hostname") and spec.get("subdomain") == name_of(svc) and namespace_of(pod) == namespace_of(svc):
        return spec["hostname"]
    return None


def pod_endpoint(svc: dict, pod: dict) -> dict:
    """podToEndpoint: the slice entry for `pod` (a candidate)."""
    publish = bool((svc.get("spec") or {}).get("publishNotReadyAddresses"))
    terminating = is_deleting(pod)
    serving = publish or is_pod_ready(pod)
    ready = publish or (serving and not terminating)
    ep: dict[str, Any] = {"addresses": [pod_ip(pod)],
                          "conditions": {"ready": ready, "serving": serving, "terminating": terminating}}
    host = _hostname(svc, pod)
    if host:
        ep["hostname"] = host
    ep["targetRef"] = _target_ref(pod)
    if node_name_of(pod):
        ep["nodeName"] = node_name_of(pod)
    return ep


def _endpoint_id(ep: dict) -> str:
    """Which pod an endpoint is: its uid (its name without one; its addresses without a
    reference at all)."""
    ref = ep.get("targetRef") or {}
    if ref.get("uid"):
        return ref["uid"]
    if ref.get("name"):
        return f"{ref.get('namespace')}/{ref['name']}"
    return ",".join(ep.get("addresses") or [])


def desired_endpoints(svc: dict, pods: Iterable[dict]) -> dict[tuple, tuple[tuple[dict, ...], list[dict]]]:
    """The endpoints of `svc` grouped by port mapping: key → (ports, endpoints by pod name)."""
    groups: dict[tuple, tuple[tuple[dict, ...], list[dict]]] = {}
    headless_no_ports = is_headless(svc) and not (svc.get("spec") or {}).get("ports")
    for pod in sorted(pods, key=name_of):
        if not _selects(svc, pod) or not is_endpoint_candidate(pod):
            continue
        ports = endpoint_ports(svc, pod)
        if not ports and not headless_no_ports:
            continue        # none of the Service's ports resolves on this pod
        key = _ports_key(ports)
        groups.setdefault(key, (tuple(sorted(ports, key=lambda p: (p["name"], p["protocol"], p["port"]))), []))
        groups[key][1].append(pod_endpoint(svc, pod))
    return groups


# --- pure: the slices --------------------------------------------------------------------------

@dataclass
class SlicePlan:
    """What to write: slices to create (bodies with generateName), to update (whole objects,
    resourceVersion kept for the compare-and-swap) and to delete (as cached)."""
    create: list[dict] = field(default_factory=list)
    update: list[dict] = field(default_factory=list)
    delete: list[dict] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.create or self.update or self.delete)


def slice_labels(svc: dict) -> dict[str, str]:
    """setEndpointSliceLabels: the Service's labels, then the ones that say whose slice it is."""
    labels = {k: v for k, v in labels_of(svc).items()
              if k not in (SERVICE_NAME_LABEL, MANAGED_BY_LABEL, HEADLESS_LABEL)}
    labels[SERVICE_NAME_LABEL] = name_of(svc)
    labels[MANAGED_BY_LABEL] = MANAGED_BY
    if is_headless(svc):
        labels[HEADLESS_LABEL] = ""
    return labels


def _owner(svc: dict) -> dict:
    ref = owner_ref_to(svc)
    return dict(ref, apiVersion="v1", kind="Service", blockOwnerDeletion=True)


def _new_slice(svc: dict, ports: tuple[dict, ...], endpoints: list[dict]) -> dict:
    body: dict[str, Any] = {
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"generateName": f"{name_of(svc)}-", "namespace": namespace_of(svc),
                     "labels": slice_labels(svc), "ownerReferences": [_owner(svc)]},
        "addressType": "IPv4", "endpoints": list(endpoints)}
    if ports:
        body["ports"] = [dict(p) for p in ports]
    return body


def _with(slc: dict, svc: dict, endpoints: list[dict]) -> dict:
    """`slc` (as cached) with `endpoints` and the Service's current labels and owner."""
    new = thaw(slc)
    md = new["metadata"]
    md["labels"] = slice_labels(svc)
    refs = [r for r in md.get("ownerReferences") or [] if r.get("uid") != uid_of(svc)]
    md["ownerReferences"] = [_owner(svc), *refs]
    new["endpoints"] = list(endpoints)
    return new


def _same_meta(a: dict, b: dict) -> bool:
    return (labels_of(a) == labels_of(b)
            and (meta(a).get("ownerReferences") or []) == (meta(b).get("ownerReferences") or []))


def plan_slices(svc: dict, pods: Iterable[dict], existing: Iterable[dict], *,
                max_per_slice: int = MAX_ENDPOINTS_PER_SLICE) -> SlicePlan:
    """The writes that turn `existing` (the slices this controller manages for `svc`) into
    the slices `svc` should have for `pods` (module docstring, step 3). Pure."""
    plan = SlicePlan()
    wanted = desired_endpoints(svc, pods)
    by_key: dict[tuple, list[dict]] = {}
    for slc in sorted(existing, key=name_of):
        if slc.get("addressType", "IPv4") != "IPv4":
            plan.delete.append(slc)
            continue
        by_key.setdefault(_ports_key(slc.get("ports") or []), []).append(slc)
    kept_any = False
    for key, (ports, endpoints) in wanted.items():
        want = {_endpoint_id(ep): ep for ep in endpoints}
        placed: set[str] = set()
        slices: list[tuple[dict, list[dict], bool]] = []     # (slice, its endpoints, changed)
        for slc in by_key.pop(key, []):
            keep, changed = [], False
            for ep in slc.get("endpoints") or []:
                eid = _endpoint_id(ep)
                if eid in want and eid not in placed:
                    keep.append(want[eid])
                    placed.add(eid)
                    changed = changed or want[eid] != ep
                else:
                    changed = True
            slices.append((slc, keep, changed or not _same_meta(_with(slc, svc, keep), slc)))
        rest = [ep for eid, ep in want.items() if eid not in placed]
        # new endpoints fill slices being written anyway first, then the fullest ones with room
        order = sorted(range(len(slices)), key=lambda i: (not slices[i][2], -len(slices[i][1])))
        for i in order:
            slc, keep, changed = slices[i]
            room = max_per_slice - len(keep)
            if rest and room > 0:
                keep = keep + rest[:room]
                rest = rest[room:]
                slices[i] = (slc, keep, True)
        for slc, keep, changed in slices:
            if not keep:
                plan.delete.append(slc)
            elif changed:
                plan.update.append(_with(slc, svc, keep))
                kept_any = True
            else:
                kept_any = True
        for i in range(0, len(rest), max_per_slice):
            plan.create.append(_new_slice(svc, ports, rest[i:i + max_per_slice]))
            kept_any = True
    leftovers = [slc for group in by_key.values() for slc in group]
    if not kept_any:
        # No endpoints: one empty placeholder slice (no endpoints, no ports) stays, as in
        # Kubernetes: an existing placeholder, else a slice emptied, else a new one.
        going = [s for s in [*leftovers, *plan.delete] if s.get("addressType", "IPv4") == "IPv4"]
        reuse = next((s for s in going if not s.get("endpoints") and not s.get("ports")), None) or \
            (going[0] if going else None)
        if reuse is None:
            plan.create.append(_new_slice(svc, (), []))
        else:
            if reuse in leftovers:
                leftovers.remove(reuse)
            else:
                plan.delete.remove(reuse)
            new = _with(reuse, svc, [])
            new.pop("ports", None)
            if new != reuse:
                plan.update.append(new)
    plan.delete.extend(leftovers)
    return plan


# --- pure: the legacy Endpoints object -----------------------------------------------------------

def _address(svc: dict, pod: dict) -> dict:
    a: dict[str, Any] = {"ip": pod_ip(pod)}
    host = _hostname(svc, pod)
    if host:
        a["hostname"] = host
    if node_name_of(pod):
        a["nodeName"] = node_name_of(pod)
    a["targetRef"] = _target_ref(pod)
    return a


def plan_endpoints(svc: dict, pods: Iterable[dict]) -> dict:
    """The Endpoints object `svc` should have (module docstring, step 4): name, labels,
    subsets; the executor adds the metadata it keeps. Pure."""
    spec = svc.get("spec") or {}
    publish = bool(spec.get("publishNotReadyAddresses"))
    # address (ip, pod uid) -> (address, ready) per port set
    groups: dict[tuple, dict[str, tuple[dict, bool]]] = {}
    port_lists: dict[tuple, list[dict]] = {}
    headless_no_ports = is_headless(svc) and not spec.get("ports")
    for pod in sorted(pods, key=name_of):
        if not _selects(svc, pod) or not is_endpoint_candidate(pod):
            continue
        if is_deleting(pod) and not publish:
            continue
        ready = publish or is_pod_ready(pod)
        # core/v1 EndpointPort: an unnamed port has no name (omitempty), unlike a slice's ""
        ports = [{k: v for k, v in p.items() if not (k == "name" and v == "")} for p in endpoint_ports(svc, pod)]
        if not ports and not headless_no_ports:
            continue
        key = _ports_key(ports)
        port_lists[key] = sorted(ports, key=lambda p: (p.get("name", ""), p["port"], p["protocol"]))
        groups.setdefault(key, {})[uid_of(pod) or name_of(pod)] = (_address(svc, pod), ready)
    subsets = []
    total = 0
    truncated = False
    for key in sorted(groups):
        entries = sorted(groups[key].values(), key=lambda e: (not e[1], _ip_sort(e[0]["ip"])))
        ready_addrs: list[dict] = []
        not_ready: list[dict] = []
        for addr, ready in entries:
            if total >= MAX_ENDPOINTS_PER_ENDPOINTS:
                truncated = True
                break
            (ready_addrs if ready else not_ready).append(addr)
            total += 1
        if not ready_addrs and not not_ready:
            continue
        ss: dict[str, Any] = {}
        if ready_addrs:
            ss["addresses"] = sorted(ready_addrs, key=lambda a: _ip_sort(a["ip"]))
        if not_ready:
            ss["notReadyAddresses"] = sorted(not_ready, key=lambda a: _ip_sort(a["ip"]))
        if port_lists[key]:
            ss["ports"] = port_lists[key]
        subsets.append(ss)
    labels = {k: v for k, v in labels_of(svc).items() if k not in (HEADLESS_LABEL, ENDPOINTS_MANAGED_BY_LABEL)}
    if is_headless(svc):
        labels[HEADLESS_LABEL] = ""
    labels[ENDPOINTS_MANAGED_BY_LABEL] = ENDPOINTS_MANAGED_BY
    md: dict[str, Any] = {"name": name_of(svc), "namespace": namespace_of(svc), "labels": labels}
    if truncated:
        md["annotations"] = {OVER_CAPACITY_ANNOTATION: "truncated"}
    body: dict[str, Any] = {"apiVersion": "v1", "kind": "Endpoints", "metadata": md}
    if subsets:
        body["subsets"] = subsets
    return body


def _ip_sort(ip: str) -> tuple:
    try:
        return tuple(int(x) for x in ip.split("."))
    except ValueError:
        return (ip,)


def endpoints_differ(current: dict, desired: dict) -> bool:
    """Whether the stored Endpoints must be rewritten: subsets, labels or the over-capacity mark."""
    cur_ann = (meta(current).get("annotations") or {}).get(OVER_CAPACITY_ANNOTATION)
    want_ann = (meta(desired).get("annotations") or {}).get(OVER_CAPACITY_ANNOTATION)
    return ((current.get("subsets") or []) != (desired.get("subsets") or [])
            or labels_of(current) != labels_of(desired) or cur_ann != want_ann)


# --- the executor ---------------------------------------------------------------------------------

def _slice_service(slc: dict) -> list[str]:
    name = labels_of(slc).get(SERVICE_NAME_LABEL)
    return [f"{namespace_of(slc)}/{name}"] if name else []


def is_managed_slice(slc: dict) -> bool:
    return labels_of(slc).get(MANAGED_BY_LABEL) == MANAGED_BY


def is_managed_endpoints(ep: dict) -> bool:
    return labels_of(ep).get(ENDPOINTS_MANAGED_BY_LABEL) == ENDPOINTS_MANAGED_BY


class EndpointSliceController:
    def __init__(self, client: Client, *, services: Informer, pods: Informer, slices: Informer,
                 endpoints: Informer, max_per_slice: int = MAX_ENDPOINTS_PER_SLICE):
        self.client = client
        self.svc_inf, self.pod_inf, self.slice_inf, self.ep_inf = services, pods, slices, endpoints
        self.max_per_slice = max_per_slice

    def register(self, manager: Manager, *, workers: int = 4) -> Controller:
        indexes.ensure(self.svc_inf, indexes.NAMESPACE)
        indexes.ensure(self.pod_inf, indexes.NAMESPACE)
        if not self.slice_inf.has_index(SLICE_SERVICE_INDEX):
            self.slice_inf.add_index(SLICE_SERVICE_INDEX, _slice_service)
        c = manager.add_controller("endpointslice", self, workers=workers)
        c.watch(self.svc_inf)
        c.watch(self.pod_inf, self._keys_for_pod)
        c.watch(self.slice_inf, _slice_service)
        c.watch(self.ep_inf)
        return c

    def _keys_for_pod(self, pod: dict) -> list[str]:
        return [key_of(s) for s in self.svc_inf.by_index(indexes.NAMESPACE, namespace_of(pod)) if _selects(s, pod)]

    def reconcile(self, key: str) -> Result:
        ns, name = split_key(key)
        svc = self.svc_inf.get(key)
        managed = [s for s in self.slice_inf.by_index(SLICE_SERVICE_INDEX, key) if is_managed_slice(s)]
        current_ep = self.ep_inf.get(key)
        if svc is None or not (svc.get("spec") or {}).get("selector") or is_deleting(svc):
            # Gone, being deleted or selectorless: what this controller made for it goes.
            for slc in managed:
                self._delete("endpointslices", slc, self.slice_inf)
            if current_ep is not None and is_managed_endpoints(current_ep):
                self._delete("endpoints", current_ep, self.ep_inf)
            return Result()
        pods = [p for p in self.pod_inf.by_index(indexes.NAMESPACE, ns) if _selects(svc, p)]
        plan = plan_slices(svc, pods, [s for s in managed if uid_of(s) and self._owned_by(s, svc)],
                           max_per_slice=self.max_per_slice)
        # a slice of an earlier Service of this name (another uid): replaced, not reused
        plan.delete.extend(s for s in managed if not self._owned_by(s, svc))
        for slc in plan.delete:
            self._delete("endpointslices", slc, self.slice_inf)
        for slc in plan.update:
            self.slice_inf.observe(self.client.update("endpointslices", slc))
        for body in plan.create:
            self.slice_inf.observe(self.client.create("endpointslices", body, ns))
        self._sync_endpoints(svc, pods, current_ep)
        return Result()

    @staticmethod
    def _owned_by(slc: dict, svc: dict) -> bool:
        return any(r.get("uid") == uid_of(svc) for r in meta(slc).get("ownerReferences") or [])

    def _sync_endpoints(self, svc: dict, pods: list[dict], current: dict | None) -> None:
        desired = plan_endpoints(svc, pods)
        if current is None:
            try:
                self.ep_inf.observe(self.client.create("endpoints", desired, namespace_of(svc)))
            except errors.AlreadyExists:
                raise errors.Conflict(f"endpoints {key_of(svc)} appeared meanwhile") from None
            return
        if not is_managed_endpoints(current) and not is_managed_endpoints(desired):
            return
        if not endpoints_differ(current, desired):
            return
        new = thaw(current)
        md = new["metadata"]
        md["labels"] = desired["metadata"]["labels"]
        ann = {k: v for k, v in (md.get("annotations") or {}).items() if k != OVER_CAPACITY_ANNOTATION}
        ann.update(desired["metadata"].get("annotations") or {})
        if ann:
            md["annotations"] = ann
        else:
            md.pop("annotations", None)
        if desired.get("subsets"):
            new["subsets"] = desired["subsets"]
        else:
            new.pop("subsets", None)
        self.ep_inf.observe(self.client.update("endpoints", new))

    def _delete(self, kind: str, obj: dict, inf: Informer) -> None:
        try:
            self.client.delete(kind, name_of(obj), namespace_of(obj), preconditions_uid=uid_of(obj))
        except errors.NotFound:
            pass
        inf.observe_deleted(key_of(obj), uid_of(obj))
