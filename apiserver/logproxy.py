"""`GET pods/{name}/log`: proxied to the agent of the pod's node.

The agent publishes its log endpoint on its Node (`status.addresses` InternalIP
and `status.daemonEndpoints.kubeletEndpoint.Port`) and serves
`GET /containerLogs/{namespace}/{pod}/{container}?follow=&tailLines=&previous=`
to callers presenting the API server's token (handed to agents when they join).
The API server streams the answer back as text/plain.
"""
from __future__ import annotations

from typing import Any

import anyio
import httpx
from fastapi.responses import StreamingResponse

from shoal.machinery.api import errors
from shoal.machinery.api.resources import resolve


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
    node = await anyio.to_thread.run_sync(registry.store.get, "nodes", None, node_name)
    if node is None:
        raise errors.ServiceUnavailable(f'node {node_name} of pod {namespace}/{name} is gone: its logs cannot be read')
    status = node.get("status") or {}
    addr = next((a["address"] for a in status.get("addresses") or [] if a.get("type") == "InternalIP"), None)
    port = ((status.get("daemonEndpoints") or {}).get("kubeletEndpoint") or {}).get("Port")
    if not addr or not port:
        raise errors.ServiceUnavailable(f'node {node_name} publishes no log endpoint (InternalIP and '
                                        f'daemonEndpoints.kubeletEndpoint.Port)')
    host = f"[{addr}]" if ":" in addr else addr
    url = f"http://{host}:{port}/containerLogs/{namespace}/{name}/{container}"
    q = {k: params.get(k) for k in ("follow", "tailLines", "previous", "timestamps") if params.get(k) is not None}
    headers = {"Authorization": f"Bearer {registry.tokens.get('apiserver', '')}"}
    follow = (params.get("follow") or "").lower() == "true"
    client = httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=None if follow else 30.0))
    try:
        req = client.build_request("GET", url, params=q, headers=headers)
        resp = await client.send(req, stream=True)
    except httpx.HTTPError as e:
        await client.aclose()
        raise errors.ServiceUnavailable(f'cannot reach the agent of node {node_name} at {url}: {e}') from None
    if resp.status_code >= 400:
        body = (await resp.aread()).decode(errors="replace")
        await resp.aclose()
        await client.aclose()
        if resp.status_code == 404:
            raise errors.NotFound(f'logs of container {container} in pod {namespace}/{name} not found on node '
                                  f'{node_name}: {body.strip()[:200]}')
        raise errors.ApiError(f'agent on node {node_name} answered {resp.status_code}: {body.strip()[:300]}',
                              code=502 if resp.status_code >= 500 else resp.status_code, reason="BadGateway")

    async def body():
        try:
            async for chunk in resp.aiter_bytes():
                yield chunk
        finally:
            await resp.aclose()
            await client.aclose()

    return StreamingResponse(body(), media_type="text/plain")
