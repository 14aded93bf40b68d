"""The ground floor: what every shoal component shares, and nothing that is one component's own.

The API server, the controllers, the node agents and the CLI agree on three things: the
shape of the objects, how to reach the API server, and how a level-based loop runs on
injected time. Those live here, below everything else. `shoal.machinery` imports no other
shoal package (the layer contract in pyproject.toml), so every component can stand on it
and none of them drags another in; scripts/check.sh also type-checks all of it.

A tour, bottom up — each subpackage imports only the ones before it:

1. `machinery.api` — the object model and its vocabulary, pure (no I/O): the `resources`
   table, `errors` (Kubernetes' Status as exceptions on both sides of the wire), `models`
   (decode, default, validate), and the helpers everyone applies to plain wire dicts.
2. `machinery.client` — `rest.Client`, the one Python client of the API server, on
   `httpconn`'s lean HTTP/1.1 connections; kubeconfig files.
3. `machinery.control` — the reconcile runtime as controller-runtime shapes it (clock,
   timers, queue, informer, manager), and the held-back writer of Events (`holdback`,
   `events`).

docs/architecture.md ("Where things live") has the whole tree and its import rules.
"""
