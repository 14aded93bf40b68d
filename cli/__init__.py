"""The `shoal` command line: kubectl's verbs, flags, tables and messages for shoal's API.

Tour: `main` builds the argparse parser (built-in verbs plus the subcommands
other modules register) and turns exceptions into `error: ...` lines and exit
codes; `context` carries the client, namespace, output streams and clocks to
handlers; `commands` holds the verbs (get, describe, delete, rollout, scale,
set image, logs, version); `apply` and `manifests` load and apply manifests;
`printers`, `describe`, `rollout` and `tabwriter` are pure formatting and
rules with table tests. Every URL comes from `apiserver.client`.
"""
