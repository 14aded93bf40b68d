"""Deployment controller package: `controller.DeploymentController` (sync dispatch) with one
module per concern — `sync` (claiming, new ReplicaSet, revisions, proportional scaling,
history cleanup), `rolling`, `recreate`, `progress` (status and deadline) — and the pure
arithmetic in `util`."""
from shoal.controller.deployment.controller import DeploymentController

__all__ = ["DeploymentController"]
