"""The node agent: the kubelet of shoal. One per host.

A tour, in the order a pod goes through it:

- `agent.agent.Agent` — the process, a thin composition that starts the parts
  below in order (its docstring is the start order).
- `agent.registration` — the Node object, its status and its Lease (pure
  `node_meta`/`build_node_status`, host capacity).
- `agent.nodenet` — the Node informer: own pod CIDR → `Network.ensure_node`,
  overlay peers (pure `overlay_peers`) and host ports (pure `host_ports`).
- `agent.dispatch` — the pod informer's handlers and the worker map
  (`PodWorkers`): what wakes a worker, adoption order, runtime relist (PLEG),
  orphans, housekeeping; `PodDispatcher` serializes syncs per uid on the
  floor's `WorkQueue`. Both informers are the floor's `Informer`.
- `agent.worker` — `PodWorker.sync()`: observe → plan → act → report, one
  pod at a time; also
  the pure `resolve_process` (command/args/env/workingDir/user as Kubernetes
  derives them from the image config).
- `agent.plan` — the pure `compute_pod_actions` (kubelet's computePodActions)
  and the container labels that make adoption work.
- `agent.restarts` — restartPolicy and the crash-loop back-off tracker (pure).
- `agent.probes` — liveness/readiness/startup workers, results cache,
  httpGet/tcpSocket/exec executors.
- `agent.status` — the pure `build_pod_status` (phase, conditions, container states).
- Events (Pulled, Created, Started, Killing, BackOff, Unhealthy...) go through the floor's
  `EventRecorder` (`shoal.machinery.control.events`), built with the agent's options.
- `agent.logserver` — `GET /containerLogs/{ns}/{pod}/{container}`, what the API server proxies `pods/log` to;
  `agent.logs` picks the file that answers.
- `agent.podapi` — the workers' status writes (CAS) and deletion confirmations.
- `agent.imagegc` — removes images no container uses.
- `agent.serviceproxy` — the node's service proxy: Services, EndpointSlices and Nodes in,
  the whole nftables table (`agent.network.svcrules`, pure) out in one transaction on
  every change (docs/services.md, "Data path").
- Time: the floor's `Clock` and timer `Scheduler` (`shoal.machinery.control.clock`,
  `.timers`), fake ones for tests.
- `agent.join` — join token → saved node credential.
- The seams (`agent.interfaces`): `ImageStore` (`agent.images`), `Runtime`
  (`agent.runtime`, runc under conmon), `Network` (`agent.network`); and
  `agent.fakes`, scripted fakes of all three so a whole agent runs without
  root (hollow nodes, integration tests, `bench/hollow_agents.py`).

docs/agent.md walks through the pod worker's steps and what survives an agent restart.
"""
