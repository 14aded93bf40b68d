"""shoal's API server: Kubernetes' paths and semantics over one revision log.

The object model it enforces (`shoal.machinery.api`: resources, models, errors, selectors)
and the client every other component talks to it with (`shoal.machinery.client`) live on
the ground floor, shared with everyone; this package is what only the server does. It
imports `shoal.machinery` alone — never the controllers or the agent, which it reaches
only over HTTP — and nothing outside it touches the database.

A tour, in the order a write goes through it:

- `settings` — one server's settings, passed to `create_app` (no module-level state).
- `store` — every object in one revision log on SQLAlchemy (SQLite or PostgreSQL): the
  log row's id is the global revision and every `resourceVersion`; compare-and-swap by the
  database; compaction; the owner index; credentials. Design notes at its top.
- `watch` — one pump reading the log into a bounded tail, many watch streams reading the
  tail; selectors as Kubernetes filters them (ADDED when an object starts matching,
  DELETED when it stops).
- `registry` — the semantics: defaulting and validation before any write, `generateName`,
  server-owned metadata, `generation`, `/status` and `/scale`, binding, graceful and
  cascading deletion (Background, Orphan, Foreground: the collector thread and its jobs),
  deletecollection, finalizers, namespace termination; `patch` — merge, JSON and
  strategic merge patches, pure.
- `app` — `create_app(settings, store)`: parse → authorize → registry → JSON. Resource
  paths reach their handler through `routetable` (a dictionary lookup, pure); `tables`
  answers `kubectl get`'s Table (and PartialObjectMetadata) requests; `discovery` serves
  `/api`, `/apis` and the OpenAPI documents kubectl reads, which `openapi` builds from the
  models; `logproxy` proxies `pods/NAME/log` to the pod's agent through `nodeclient`, the one
  way to an agent (mutual TLS to the address recorded at the node's join), and `nodecerts`
  signs the agents' serving certificates at join and records that address.
- `auth` — bearer tokens and the roles admin, join, node (a node may write only its own
  Node and Lease, its pods' status and Events); `tls` — the cluster CA, the server's serving
  certificate, its client certificate for agents, the agents' serving certificates.
- `server` — `ServerProcess`: settings → store → app → uvicorn, tokens and kubeconfigs,
  SIGTERM. The controllers it runs come through `start(controllers=factory)`: the
  composition root (`shoal.cli.cmd_server`, `shoal.testkit.apiserver`) passes the factory,
  so the server never imports them.
"""
