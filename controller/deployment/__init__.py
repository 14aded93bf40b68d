"""Deployment controller package: `controller.DeploymentController` (reads, then dispatch)
decides with the pure planners — `plan.plan_sync` (which branch of syncDeployment), `rolling`
and `recreate` (one step of each strategy), `util` (arithmetic, proportional scaling, the
objects written) — and writes with `sync` (claiming, the new ReplicaSet, scaling, history
cleanup) and `progress` (status and the progress deadline)."""
from shoal.controller.deployment.controller import DeploymentController

__all__ = ["DeploymentController"]
