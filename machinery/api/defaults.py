"""Kubernetes' default values, as plain constants: the one place they are written.

`models/defaults.py` fills them into decoded objects before validation (the API server);
the controllers and the CLI read them for fields an object may still leave unset, and
`podtemplate` drops them when it compares templates. This module imports nothing, so the
CLI can use it without building the models (≈ 0.25 s of start-up).
"""
from __future__ import annotations

# -- workloads (apps/v1 Deployment, ReplicaSet) ---------------------------------------------
DEFAULT_REPLICAS = 1
DEFAULT_DEPLOYMENT_STRATEGY = "RollingUpdate"
DEFAULT_MAX_SURGE = "25%"
DEFAULT_MAX_UNAVAILABLE = "25%"
DEFAULT_REVISION_HISTORY_LIMIT = 10
DEFAULT_PROGRESS_DEADLINE_SECONDS = 600
DEFAULT_MIN_READY_SECONDS = 0            # not defaulted by Kubernetes: the zero value

# -- pod specs ------------------------------------------------------------------------------
DEFAULT_RESTART_POLICY = "Always"
DEFAULT_TERMINATION_GRACE_PERIOD_SECONDS = 30
DEFAULT_DNS_POLICY = "ClusterFirst"
DEFAULT_SCHEDULER_NAME = "default-scheduler"
DEFAULT_TERMINATION_MESSAGE_PATH = "/dev/termination-log"
DEFAULT_TERMINATION_MESSAGE_POLICY = "File"
DEFAULT_PROTOCOL = "TCP"
DEFAULT_PROBE_TIMEOUT_SECONDS = 1
DEFAULT_PROBE_PERIOD_SECONDS = 10
DEFAULT_PROBE_SUCCESS_THRESHOLD = 1
DEFAULT_PROBE_FAILURE_THRESHOLD = 3
DEFAULT_HTTP_GET_PATH = "/"
DEFAULT_HTTP_GET_SCHEME = "HTTP"


def default_pull_policy(image: str) -> str:
    """imagePullPolicy for a container that sets none: Always when the tag is `latest`, or when
    there is neither tag nor digest (the tag is then `latest`); IfNotPresent otherwise (Kubernetes'
    SetDefaults_Container). `image` is a valid reference (models/imageref.py parses it the same
    way: the digest after `@`, the tag after the last `:` of the last path segment)."""
    name, at, _digest = image.partition("@")
    colon, slash = name.rfind(":"), name.rfind("/")
    tag = name[colon + 1:] if colon > slash else None
    return "Always" if tag == "latest" or (tag is None and not at) else "IfNotPresent"
