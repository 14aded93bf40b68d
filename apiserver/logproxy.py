"""`GET pods/{name}/log`: proxied to the agent of the pod's node, over mutual TLS.

The agent serves `GET /containerLogs/{namespace}/{pod}/{container}?follow=&tailLines=&previous=&timestamps=`
on the port it publishes in its Node (`status.daemonEndpoints.kubeletEndpoint.Port`),
to the API server's client certificate only (`agent.logserver`). The connection is
`apiserver.nodeclient`'s: to the address recorded at the node's join, never the Node's
InternalIP, and verified as that node's agent before the request is sent. The answer
streams back as text/plain; the agent's 4xx become the same errors here (400, 404), any
other failure a 502/503 naming the node.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlencode

import anyio
from fastapi.responses import StreamingResponse

from shoal.machinery.api import errors
from shoal.machinery.api.resources import resolve
from shoal.apiserver import nodeclient

QUERY = ("follow", "tailLines", "previous", "timestamps")


def agent_path(namespace: str, name: str, container: str, params: Any) -> str:
    """The agent's path and query for a log request (pure)."""
    q = {k: params.get(k) for k in QUERY if params.get(k) is not None}
    path = "/containerLogs/" + "/".join(quote(p, safe="") for p in (namespace, name, container))
    return path + (f"?{urlencode(q)}" if q else "")


async def proxy_pod_log(registry: Any, namespace: str | None, name: str, params) -> StreamingResponse:
    pod = await anyio.to_thread.run_sync(registry.get, resolve("pods"), namespace, name)
    containers = [c["name"] for c in (pod.get("spec") or {}).get("containers") or []]
    container = params.get("container") or (containers[0] if len(containers) == 1 else None)
    if container is None:
        raise errors.BadRequest(f'a container name must be specified for pod {name}, choose one of: '
                                f'[{" ".join(containers)}]')
    if container not in containers:
        raise errors.BadRequest(f'container {container} is not valid for pod {name}')
    node_name = (pod.get("spec") or {}).get("nodeName")
    if not node_name:
        raise errors.BadRequest(f'pod {namespace}/{name} is not scheduled to a node yet: no logs to show')
    follow = (params.get("follow") or "").lower() == "true"
    resp = await nodeclient.request(registry.store, registry.settings.data_dir, node_name, "GET",
                                    agent_path(namespace or "", name, container, params),
                                    read_timeout=None if follow else 30.0)
    if resp.status_code >= 400:
        text = (await resp.aread()).decode(errors="replace").strip()
        await resp.aclose()
        if resp.status_code == 404:
            raise errors.NotFound(f'logs of container {container} in pod {namespace}/{name} not found on node '
                                  f'{node_name}: {text[:200]}')
        if resp.status_code == 400:
            raise errors.BadRequest(f'node {node_name}: {text[:300]}')
        raise errors.ApiError(f'agent on node {node_name} answered {resp.status_code}: {text[:300]}',
                              code=502, reason="BadGateway")

    async def body():
        try:
            async for chunk in resp.aiter_bytes():
                yield chunk
        except errors.ApiError:
            return          # the agent stopped answering mid-stream: the log ends there
        finally:
            await resp.aclose()

    return StreamingResponse(body(), media_type="text/plain")
