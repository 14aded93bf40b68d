"""The node agent: the kubelet of shoal. One per host.

A tour, in the order a pod goes through it:

- `agent.agent.Agent` — the process: registers the Node, renews its Lease,
  watches its pods and all Nodes (pod CIDR, overlay peers), relists the
  runtime (exits, adoption, orphans) and hands every pod uid to its worker.
- `agent.worker` — `PodWorker.sync()`: observe → plan → act → report, one
  pod at a time (`PodDispatcher` serializes per uid on a thread pool); also
  the pure `resolve_process` (command/args/env/workingDir/user as Kubernetes
  derives them from the image config).
- `agent.plan` — the pure `compute_pod_actions` (kubelet's computePodActions)
  and the container labels that make adoption work.
- `agent.restarts` — restartPolicy and the crash-loop back-off tracker (pure).
- `agent.probes` — liveness/readiness/startup workers, results cache,
  httpGet/tcpSocket/exec executors.
- `agent.status` — the pure `build_pod_status` (phase, conditions, container states).
- `agent.events` — aggregated core/v1 Events (Pulled, Created, Started, Killing, BackOff, Unhealthy...).
- `agent.logserver` — `GET /containerLogs/{ns}/{pod}/{container}`, what the API server proxies `pods/log` to.
- `agent.clock` — injectable clock and timer scheduler (fake ones for tests).
- `agent.join` — join token → saved node credential.
- The seams (`agent.interfaces`): `ImageStore` (`agent.images`), `Runtime`
  (`agent.runtime`, runc under conmon), `Network` (`agent.network`); and
  `agent.fakes`, scripted fakes of all three so a whole agent runs without
  root (hollow nodes, integration tests, `bench/hollow_agents.py`).

docs/agent.md walks through the pod worker's steps and what survives an agent restart.
"""
