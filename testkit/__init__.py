"""Test kits: real pieces of shoal set up the way tests, benchmarks, the demo and `shoal lab`
need them.

Nothing here is a mock: each kit starts or builds the real thing (an API server, a
registry, runc containers, network namespaces) in a throw-away place and takes it down
again. `shoal.testkit` sits above the peers (it may import `shoal.apiserver`,
`shoal.controller`, `shoal.agent` and `shoal.machinery`) and below `shoal.cli`; no
production package imports it (the layer contract in pyproject.toml).

A tour, from the cheapest kit to the whole cluster:

- `apiserver` — `start_test_server(tmp_path, controllers=False)`: a real API server in a
  thread on loopback with a temp SQLite file (with the controllers through the same
  factory seam `shoal server` uses, when asked); `ServerSubprocess`, `shoal server` as a
  process of its own for benchmarks; `wait_for`, the one polling helper the fixtures
  build on.
- `images` — the test images (`web:v1`, `web:v2`, `flaky:v1`, `crash:v1`, `sleeper:v1`)
  built from Debian's static busybox with no downloads and the same digests every time,
  a loopback `docker-registry`, a pure-Python push, `docker save` / OCI archives and a
  token-auth server. The demo (`shoal images build-demo`) uses them too.
- `steadyclient` — a steady HTTP client (a fixed rate, a new connection per request, every
  request recorded with its time, answer and port) to run in a lab namespace while a rollout
  or a host failure happens; `summarize` reads its records.
- `runtime` (root) — a one-layer busybox image on disk as a `PulledImage`, and
  `teardown_runtime`, which kills and removes every container of a runtime and its
  cgroups, and answers what it could not clean.
- `labnet` (root) — N "hosts" as network namespaces on a bridge in a lab namespace with
  no uplink; idempotent create, destroy by name prefix.
- `lab` (root) — `shoal lab`: a multi-host cluster on those hosts (control plane and
  registry in their own namespace, a real `shoal agent` per host), every process in a
  named cgroup so `down` finds it without state. Pure planning (`plan_lab`, the argv
  builders) beside the executor `Lab`.

docs/lab.md describes the lab; tests/e2e's fixtures are thin wrappers of these kits.
"""
