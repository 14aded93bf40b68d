"""shoal's controllers: the reconcile loops that turn declared objects into running pods.

The machinery they are built from is on the ground floor, shared with the agents:
`shoal.machinery.control` (clock → `WorkQueue` → `Informer` → `Reconciler`/`Result`,
`Controller`, `Manager`; the `EventRecorder`), `shoal.machinery.api` (`objects` helpers
over wire dicts, `selectors`, quantities) and `shoal.machinery.client`. This
package imports nothing else of shoal: the API server runs it only through the factory a
composition root (`shoal.cli`, `shoal.testkit`) hands to `ServerProcess.start(controllers=...)`.

A tour, in the order the pieces depend on each other:

1. The contract (`shoal.machinery.control.manager`): `Reconciler.reconcile(key) ->
   Result(requeue_after)`; an exception means retry with back-off; the queue never runs
   one key on two workers; every reconcile re-reads the informer caches (level-based) and
   hands its writes to `Informer.observe` so the next one sees them.
2. `indexes` — the cache indexes the controllers share (pods by node, objects by
   controller or owner uid, orphans by namespace), each added once per informer.
3. `deployment` — Deployment → ReplicaSets (`<name>-<pod-template-hash>`, revisions,
   history limit, RollingUpdate/Recreate, paused, proportional scaling, progress deadline).
   Pure arithmetic in `deployment.util`.
4. `replicaset` — ReplicaSet → Pods (create from template, delete worst-first, adopt and
   release by selector, status with availability after minReadySeconds).
5. `scheduler` — pending pods → nodes (pure filters/scores in `scheduler.framework`,
   incremental `ClusterState`, CAS bind, `FailedScheduling` / `Scheduled` events).
6. `nodelifecycle` — Lease heartbeats → Ready=Unknown + unreachable taints → eviction;
   `nodeipam` — a /24 of the cluster CIDR per node.
7. `gc` — the safety net for dependents whose owners are gone (the API server's collector
   does cascades, orphaning and foreground deletion; both judge by `machinery.api.deletion`).
8. `endpointslice` — Services → EndpointSlices and Endpoints (ready/serving/terminating per
   pod, ports resolved per pod, at most 100 per slice; pure `plan_slices`, `plan_endpoints`);
   `servicelb` — LoadBalancer Services' `status.loadBalancer.ingress`: the Ready nodes.
9. `manager` — `run_controllers(client, options=Options())` for `shoal server`, and
   `main(argv)` for `shoal controller --kubeconfig PATH` / `python -m shoal.controller.manager`.

Worked example — `shoal apply` of a Deployment `web` with 3 replicas:
  the Deployment informer enqueues `default/web`; the deployment reconciler finds no
  ReplicaSet whose template matches, creates `web-5d8f7c6b9` (revision 1, replicas 3,
  owner web); the ReplicaSet informer enqueues `default/web-5d8f7c6b9`; the replicaset
  reconciler sees 0 of 3 pods and creates `web-5d8f7c6b9-x2k9q` ... ; the scheduler binds
  each to the least-loaded node holding the fewest pods of that ReplicaSet; agents run them
  and report Ready; the ReplicaSet's status counts them available; the Deployment's status
  reaches 3/3 with Progressing=NewReplicaSetAvailable. Every step re-reads state: kill the
  controller at any point and the next reconcile continues from what exists.

Controllers talk to the API server only through `shoal.machinery.client.rest.Client`, over HTTP.
"""
