"""How every shoal component talks to the API server: one client, over HTTP(S).

The CLI, the controllers, the agents and the test kits all use `rest.Client`; nothing reads
another component's database or files. Objects are plain wire dicts; a `kind` is anything
`machinery.api.resources.resolve` accepts; errors come back as `machinery.api.errors`
classes rebuilt from the server's Status; a server that cannot be reached raises
`ConnectionFailed`.

A tour:

- `rest` — `Client` (`create`, `get`, `list`, `update`, `update_status`, `bind`, `patch`,
  `delete`, `watch`, `logs`; thread-safe), and the kubeconfig files it is built from
  (`Client.from_kubeconfig`, `load_kubeconfig`, `write_kubeconfig`). Plain requests share
  a pool of keep-alive connections; one that fails on a reused connection before any
  answer (the server closed it while idle) is sent once more on a new one. Each watch
  reads on a connection of its own and never reconnects by itself: informers own that
  loop, so they can relist on 410 Gone. Only log streams go through httpx.
- `httpconn` — the lean HTTP/1.1 connection under the plain requests and the watches:
  the request in one write, the answer's head split as bytes, bodies by length, chunks
  or close; a stale connection raises `Disconnected` so the pool can retry. Not
  thread-safe: the pool hands a connection to one thread at a time.
"""
