"""Static checks, not a pytest module: scripts/check.sh runs mypy over this file.

Every implementation of a seam — the real one and its fake — is assigned to the Protocol it
stands in for, so a method that drifts from `agent.interfaces` (or `agent.network.netlink`)
on either side fails the type check instead of a test run on the other side.
"""
from shoal.agent.fakes import FakeImageStore, FakeNetwork, FakeProbeExecutor, FakeRuntime
from shoal.agent.images.store import LocalImageStore
from shoal.agent.interfaces import ImageStore, Network, Runtime
from shoal.agent.network.fakenetlink import RecordingNetlink
from shoal.agent.network.netlink import Netlink
from shoal.agent.network.node import NodeNetwork
from shoal.agent.network.pyroute import PyrouteNetlink
from shoal.agent.network.runner import RecordingRunner, Runner, SubprocessRunner
from shoal.agent.probes import ProbeExecutor, RealProbeExecutor
from shoal.agent.runtime import RuncRuntime
from shoal.machinery.control.clock import Clock, FakeClock, RealClock
from shoal.machinery.control.timers import ManualScheduler, Scheduler, ThreadScheduler


def runtimes(real: RuncRuntime, fake: FakeRuntime) -> list[Runtime]:
    return [real, fake]


def image_stores(real: LocalImageStore, fake: FakeImageStore) -> list[ImageStore]:
    return [real, fake]


def networks(real: NodeNetwork, fake: FakeNetwork) -> list[Network]:
    return [real, fake]


def netlinks(real: PyrouteNetlink, fake: RecordingNetlink) -> list[Netlink]:
    return [real, fake]


def runners(real: SubprocessRunner, fake: RecordingRunner) -> list[Runner]:
    return [real, fake]


def probe_executors(real: RealProbeExecutor, fake: FakeProbeExecutor) -> list[ProbeExecutor]:
    return [real, fake]


def clocks(real: RealClock, fake: FakeClock) -> list[Clock]:
    return [real, fake]


def schedulers(real: ThreadScheduler, fake: ManualScheduler) -> list[Scheduler]:
    return [real, fake]
