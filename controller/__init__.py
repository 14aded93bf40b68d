"""shoal's controllers: the reconcile loops that turn declared objects into running pods.

A tour, in the order the pieces depend on each other:

1. `controller.runtime` — the machinery, as controller-runtime shapes it.
   `clock` (injected time) → `queue.WorkQueue` (de-duplicated keys, one key one worker,
   per-key exponential back-off, `add_after`) → `informer.Informer` (list + watch into a
   read-only cache, relist on 410 Gone, resync, handlers, indexes, read-your-writes via
   `observe`) → `manager` (`Reconciler.reconcile(key) -> Result(requeue_after)`; an
   exception means retry with back-off; `Controller` = queue + reconciler + workers;
   `Manager` owns informers, controllers and apscheduler jobs).
2. `objects`, `selectors`, `indexes`, `events` — helpers over plain wire dicts, label
   selectors, shared cache indexes, and the background `EventRecorder`.
3. `deployment` — Deployment → ReplicaSets (`<name>-<pod-template-hash>`, revisions,
   history limit, RollingUpdate/Recreate, paused, proportional scaling, progress deadline).
   Pure arithmetic in `deployment.util`.
4. `replicaset` — ReplicaSet → Pods (create from template, delete worst-first, adopt and
   release by selector, status with availability after minReadySeconds).
5. `scheduler` — pending pods → nodes (pure filters/scores in `scheduler.framework`,
   incremental `ClusterState`, CAS bind, `FailedScheduling` / `Scheduled` events).
6. `nodelifecycle` — Lease heartbeats → Ready=Unknown + unreachable taints → eviction;
   `nodeipam` — a /24 of the cluster CIDR per node.
7. `gc` — orphaned dependents whose owners are gone.
8. `manager` — `run_controllers(client, options=Options())` for `shoal server`, and
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

Controllers talk to the API server only through `apiserver.client.Client`, over HTTP.
"""
