"""The `shoal` command line: kubectl's verbs, flags, tables and messages for shoal's API —
and the composition root that puts the other packages together into processes.

`shoal.cli` is the top layer: the only package that may import all the others
(`shoal.machinery`, `shoal.apiserver`, `shoal.controller`, `shoal.agent`, `shoal.testkit`),
and nothing imports it. `python -m shoal.cli ARGS` is `shoal ARGS` (`__main__`), which is
how the lab, `shoal up --detach` and the tests spawn it.

A tour:

- `main` — builds the argparse parser (the built-in verbs plus the subcommands of the
  `cmd_*` modules, each with `register(subparsers)`) and turns exceptions into `error: ...`
  lines and exit codes; `context` carries the client, namespace, output streams and clocks
  to the handlers.
- `commands` — the kubectl verbs (get, describe, delete, rollout, scale, set image, logs,
  version); `apply` and `manifests` load and apply manifests; `completion` writes the
  shell completion script from the parser.
- `printers`, `describe`, `rollout`, `tabwriter` — pure formatting and rules with table
  tests.
- The composition: `cmd_server` (`shoal server`, `shoal controller`; the controller
  factories handed to `ServerProcess.start(controllers=...)`: in process or a supervised
  `shoal controller` child), `cmd_agent` (an agent on the real seams or the scripted
  fakes), `cmd_up` (`shoal up`/`down`: server, controllers and a local agent in one
  command), `cmd_lab` (`shoal lab` over `shoal.testkit.lab`), `cmd_images` (a node's image
  store; the demo images from `shoal.testkit.images`), `cmd_token`.

Every URL comes from `shoal.machinery.client.rest.Client` and the `resources` table.
"""
