"""Restart policy and crash-loop back-off, as pure bookkeeping.

Contract
- `should_restart(policy, exit_code)` answers kubelet's question "may this
  exited container run again?": Always → yes; OnFailure → only for a non-zero
  exit; Never → no.
- `RestartTracker` is fed every exit it is shown (idempotently: the same exit,
  identified by the exited container's id, is counted once however often the
  pod worker observes it) and answers *when* the next attempt may start:

      exit #1 → at once (not_before = finished_at)
      exit #2 → finished_at + initial          (10 s by default)
      exit #3 → finished_at + 2·initial        ... doubling up to `maximum` (300 s)

  A container that ran at least `reset_after` (600 s) before it exited is
  considered healthy: its exit starts the sequence again ("at once").
- Nothing here reads a clock: every time is passed in, so the table tests use
  plain numbers and the worker passes its injected clock's value.

Design notes
- Like Nomad's RestartTracker and kubelet's flowcontrol.Backoff, the state is
  keyed per (pod uid, container name); the pod worker also uses a second key
  (pod uid, container name, "pull") for image-pull back-off with the same
  arithmetic.
- The state is in memory only: after an agent restart the first exit it sees
  restarts at once, as kubelet does. Restart *counts* survive because they are
  stored in the container labels (see `agent.plan`), not here.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Hashable

RESTART_ALWAYS = "Always"
RESTART_ON_FAILURE = "OnFailure"
RESTART_NEVER = "Never"


def should_restart(policy: str | None, exit_code: int | None) -> bool:
    """May a container that exited with `exit_code` be started again under `policy`?"""
    policy = policy or RESTART_ALWAYS
    if policy == RESTART_NEVER:
        return False
    if policy == RESTART_ON_FAILURE:
        return exit_code != 0
    return True


@dataclass(frozen=True)
class BackoffPolicy:
    initial: float = 10.0
    maximum: float = 300.0
    reset_after: float = 600.0

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < self.initial:
            raise ValueError(f"back-off policy needs 0 <= initial ({self.initial}) <= maximum ({self.maximum})")


@dataclass(frozen=True)
class Backoff:
    """The answer for one key: the next attempt may start at `not_before`;
    `delay` is the wait that applied (0 for an immediate restart)."""
    not_before: float
    delay: float
    exits: int            # exits counted in the current crash-loop sequence


@dataclass
class _Entry:
    exit_id: str
    backoff: Backoff
    next_delay: float


class RestartTracker:
    """Crash-loop back-off per key. Not thread-safe by itself: each key is only
    touched by its pod's serialized worker (the dict operations are atomic)."""

    def __init__(self, policy: BackoffPolicy | None = None):
        self.policy = policy or BackoffPolicy()
        self._entries: dict[Hashable, _Entry] = {}

    def record_exit(self, key: Hashable, *, exit_id: str, started_at: float | None,
                    finished_at: float, first_immediate: bool = True) -> Backoff:
        """Count the exit `exit_id` (once) and return when the next attempt may start.
        `first_immediate=False` (image pulls) makes the first failure wait `initial` too."""
        e = self._entries.get(key)
        if e is not None and e.exit_id == exit_id:
            return e.backoff
        healthy = started_at is not None and finished_at - started_at >= self.policy.reset_after
        if e is None or healthy:
            first = 0.0 if first_immediate else self.policy.initial
            bo = Backoff(not_before=finished_at + first, delay=first, exits=1)
            nxt = self.policy.initial if first_immediate else min(2 * first, self.policy.maximum)
        else:
            delay = e.next_delay
            bo = Backoff(not_before=finished_at + delay, delay=delay, exits=e.backoff.exits + 1)
            nxt = min(max(delay * 2, self.policy.initial), self.policy.maximum)
        self._entries[key] = _Entry(exit_id=exit_id, backoff=bo, next_delay=nxt)
        return bo

    def get(self, key: Hashable) -> Backoff | None:
        e = self._entries.get(key)
        return e.backoff if e else None

    def reset(self, key: Hashable) -> None:
        self._entries.pop(key, None)

    def forget(self, prefix: Hashable) -> None:
        """Drop every key whose first element is `prefix` (a pod uid) — the pod is gone."""
        for k in [k for k in self._entries if isinstance(k, tuple) and k and k[0] == prefix]:
            self._entries.pop(k, None)

    def __len__(self) -> int:
        return len(self._entries)
