"""The pod workers' writes to the API server (`agent.worker.PodApi` over the REST client).

- `write_status` puts a pod's status with compare-and-swap: on 409 it re-reads the pod
  and tries again with the same status (at most 5 times), unless the name now belongs
  to another pod (uid changed) or the pod is gone — then there is nothing to write.
- `confirm_deletion` is the final `DELETE` with `gracePeriodSeconds=0` and a uid
  precondition, once the pod's containers and network are gone.
- `read_secret` GETs one Secret a pod bound here references (its imagePullSecrets): the
  node's credential may read exactly those (apiserver.auth, the Node authorizer graph).
"""
from __future__ import annotations

from shoal.machinery.api import errors


class ClientPodApi:
    def __init__(self, client):
        self.client = client

    def write_status(self, pod: dict, status: dict) -> dict | None:
        md = pod["metadata"]
        body = dict(pod, status=status)
        for _ in range(5):
            try:
                return self.client.update_status("pods", body)
            except errors.Conflict:
                try:
                    fresh = self.client.get("pods", md["name"], md.get("namespace"))
                except (errors.NotFound, errors.Forbidden):
                    return None     # gone, or the name now belongs to a pod bound elsewhere (not ours to read)
                if fresh["metadata"].get("uid") != md.get("uid"):
                    return None
                body = dict(fresh, status=status)
            except errors.NotFound:
                return None
        raise errors.Conflict(f"status of pod {md.get('namespace')}/{md['name']} kept conflicting after 5 attempts")

    def read_secret(self, namespace: str, name: str) -> dict:
        return self.client.get("secrets", name, namespace)

    def confirm_deletion(self, pod: dict) -> None:
        md = pod["metadata"]
        try:
            self.client.delete("pods", md["name"], md.get("namespace"), grace_period_seconds=0,
                               preconditions_uid=md.get("uid"))
        except (errors.NotFound, errors.Conflict):
            pass      # already gone, or the name now belongs to a newer pod
