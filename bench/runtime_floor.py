"""Runtime floor: raw `runc run -d` of N busybox containers, beside shoal's
RuncRuntime (overlay + conmon + `runc create` + `runc start`) in the same run.

The pod-start benchmark (`bench/pod_start.py`) compares against the first
figure: it is what starting containers costs with nothing but runc.

- raw: one prepared bundle per container (config.json from the same
  `build_oci_spec`, the busybox layer as a read-only root, no overlay, no
  monitor); only `runc run -d` is timed.
- shoal: `RuncRuntime.create` + `start` per container (overlay mount, /etc
  files, conmon in its cgroup, runc create, runc start), all timed; and
  `RuncRuntime.run` (the same, but conmon runs `runc run --detach` through the
  run shim and no `runc start` follows) — what the pod worker uses.

Both run `sleep 1000` in a fresh network namespace, `--parallel` at a time,
and everything is removed afterwards. Root only.
Prints one JSON line per figure:
    python3 bench/runtime_floor.py [-n 10 -n 50] [--parallel 1 --parallel 2]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from shoal.agent.interfaces import ContainerConfig  # noqa: E402
from shoal.agent.runtime import RuncRuntime, build_oci_spec  # noqa: E402
from shoal.agent.runtime.cgroups import Cgroups  # noqa: E402
from shoal.agent.runtime.runc import DEFAULT_RUNC  # noqa: E402
from shoal.testkit.runtime import busybox_image, teardown_runtime  # noqa: E402


def emit(**kw) -> None:
    print(json.dumps(kw), flush=True)


def cfg_for(image, i: int, tag: str, logs: Path) -> ContainerConfig:
    return ContainerConfig(id=f"bench-{tag}-{i}", pod_uid=f"bench{i}", pod_name=f"bench-{i}", namespace="bench",
                           container_name="c", attempt=0, image=image, argv=["sleep", "1000"], env=["PATH=/bin"],
                           log_path=str(logs / f"{tag}-{i}.log"))


def timed_parallel(fn, items, parallel: int) -> tuple[float, list[float]]:
    lat: list[float] = []

    def one(x):
        t = time.monotonic()
        fn(x)
        lat.append(time.monotonic() - t)

    t0 = time.monotonic()
    with ThreadPoolExecutor(max_workers=parallel) as pool:
        list(pool.map(one, items))
    return time.monotonic() - t0, lat


def raw_runc(image, work: Path, n: int, parallel: int, cgroup_parent: str) -> dict:
    runc_root = work / "raw-runc"
    runc_root.mkdir(parents=True, exist_ok=True)
    tag = uuid.uuid4().hex[:6]
    bundles = []
    for i in range(n):
        c = cfg_for(image, i, f"raw{tag}", work)
        b = work / "raw" / c.id
        b.mkdir(parents=True)
        spec = build_oci_spec(c, rootfs=image.layers[0], cgroups_path=f"{cgroup_parent}/{c.id}",
                              readonly_rootfs=True, nofile=20000)
        (b / "config.json").write_text(json.dumps(spec))
        bundles.append((c.id, str(b)))

    def run(item):
        cid, bundle = item
        subprocess.run([DEFAULT_RUNC, "--root", str(runc_root), "run", "--detach", "--bundle", bundle, cid],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)

    try:
        total, lat = timed_parallel(run, bundles, parallel)
    finally:
        for cid, _ in bundles:
            subprocess.run([DEFAULT_RUNC, "--root", str(runc_root), "delete", "--force", cid],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        Cgroups().remove(cgroup_parent)
    return figures(total, lat)


def figures(total: float, lat: list[float]) -> dict:
    lat_ms = sorted(x * 1000 for x in lat)
    return {"total_s": round(total, 3), "per_container_ms": round(total * 1000 / max(1, len(lat)), 1),
            "p50_ms": round(statistics.median(lat_ms), 1), "max_ms": round(lat_ms[-1], 1)}


def shoal_runtime(image, work: Path, n: int, parallel: int, cgroup_parent: str, *, one_step: bool = False) -> dict:
    """RuncRuntime create + start, or (one_step) run: conmon runs `runc run` through the shim."""
    rt = RuncRuntime(str(work / "shoal"), runc_root=str(work / "shoal-runc"), cgroup_parent=cgroup_parent)
    tag = uuid.uuid4().hex[:6]
    cfgs = [cfg_for(image, i, f"shoal{tag}", work / "logs") for i in range(n)]

    def create_start(c):
        if one_step:
            rt.run(c)
            return
        rt.create(c)
        rt.start(c.id)

    try:
        total, lat = timed_parallel(create_start, cfgs, parallel)
    finally:
        problems = teardown_runtime(rt)
        if problems:
            print(f"cleanup problems: {problems}", file=sys.stderr)
    return figures(total, lat)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, action="append", help="containers per run (repeatable; default 10 and 50)")
    ap.add_argument("--parallel", type=int, action="append", help="at a time (repeatable; default 1 and 2)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("runtime_floor needs root (runc, overlayfs, cgroups)")
    work = Path(tempfile.mkdtemp(prefix="shoal-bench-rt-"))
    try:
        image = busybox_image(str(work / "layer"))
        for n in args.n or [10, 50]:
            for par in args.parallel or [1, 2]:
                cg = f"/shoal-bench-{uuid.uuid4().hex[:6]}"
                emit(bench="runtime_floor", runtime="runc run -d", n=n, parallel=par,
                     **raw_runc(image, work, n, par, cg))
                emit(bench="runtime_floor", runtime="shoal RuncRuntime create+start (conmon)", n=n, parallel=par,
                     **shoal_runtime(image, work, n, par, cg + "-s"))
                emit(bench="runtime_floor", runtime="shoal RuncRuntime run (conmon + runc run)", n=n, parallel=par,
                     **shoal_runtime(image, work, n, par, cg + "-r", one_step=True))
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
