"""The early-exit RTL run, sharded over a Dask cluster.

The test images are cut into shards of ``shard_size`` images in a fixed order. Each shard is
one task, ``run_shard``: it runs ``sim.run.run_images`` on a ``RunDesign`` that its worker
process prepares once (Verilog generation and the simulator build; builds are shared between
processes through the build cache, ``sim.simulator.build``, which locks a build while it
compiles) and keeps for every later shard. The client writes each finished shard to
``<work>/shard-NNNNN.json`` as it completes (write, then rename, so a file is whole or
absent): its ``sim.result.Result`` (``to_dict``), the worker and the timings. The merge reads
the results back (``from_dict``) in shard order and joins them (``Result.merge``), so the
merged result does not depend on how many workers ran them, or in which order they finished.
``<work>/config.json`` names the configuration (the IntModel's and exit path's hashes, the
array, the stream, the head, the exits on, the images); ``resume`` keeps the shards of the same configuration and computes only
the missing ones, and refuses a folder of another configuration.

Workers: 1 runs the shards in this process, one after another (no Dask); more start a Dask
``LocalCluster`` of that many single-threaded worker processes; ``cluster`` attaches to a
running scheduler instead. A worker that dies mid-shard loses only its shard, which Dask
runs again on another worker (``retries`` more times for a shard that raises); a shard is
written once, by the client, when its result arrives, so nothing is counted twice.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from hw.cost import Machine
from model.data import load_images
from model.errors import QexitError
from model.exits import exit_path
from model.quantize import load_intmodel
from sim import run as sim_run
from sim.result import Result

RETRIES = 2
SHARD_FORMAT = 3           # a shard file holds {"shard", "indices", "result", "worker", "timing"}


@dataclass(frozen=True)
class RunSpec:
    """Everything that decides a run's results (paths, and the files' hashes in ``key``): the
    machine (its L x L array and memory; its clock decides nothing here), the exits on (None:
    the exit path's), the simulator."""
    intmodel: str
    exit_path: str
    machine: Machine = Machine()
    layers: tuple[int, ...] | None = None
    simulator: str | None = None
    data: str | None = None        # the test images' folder (None: the embedded Fashion-MNIST)
    clip: bool = False             # a CLIP model's images (cropped as CLIP does)

    def key(self, indices: list[int], shard_size: int) -> dict:
        m = self.machine
        return {"intmodel": self.intmodel, "exit_path": self.exit_path, "lanes": m.lanes, "bandwidth": m.bandwidth,
                "latency": m.latency, "layers": None if self.layers is None else list(self.layers),
                "simulator": self.simulator, "data": self.data, "clip": self.clip, "intmodel_sha256": _sha256(self.intmodel),
                "exit_path_sha256": _sha256(self.exit_path), "indices": indices, "shard_size": shard_size,
                "shard_format": SHARD_FORMAT}


def _sha256(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()
    except FileNotFoundError:
        raise QexitError(f"no such file: {path}") from None


_DESIGNS: dict = {}        # per process: RunSpec -> (RunDesign, test images)


def _design(spec: RunSpec):
    if spec not in _DESIGNS:
        ep = exit_path.load(spec.exit_path)
        if spec.layers is not None:
            ep = sim_run.only(ep, list(spec.layers))
        im = load_intmodel(spec.intmodel)
        d = sim_run.prepare(im, ep, spec.machine, spec.simulator)
        c = im.config
        _DESIGNS[spec] = (d, load_images("test", spec.data, c.image_size, c.channels, spec.clip).images)
    return _DESIGNS[spec]


def run_shard(spec: RunSpec, shard: int, indices: list[int]) -> dict:
    """One shard on this process's design: its result (``Result.to_dict``; each record's
    ``image`` is its test index), and apart from it the worker and the timings, which the merge
    leaves out."""
    torch.set_num_threads(1)
    t0 = time.time()
    d, images = _design(spec)
    prep = time.time() - t0
    r = sim_run.run_images(d, images[torch.tensor(indices)])
    for rec in r.records:
        rec["image"] = indices[rec["image"]]
    timing = {"prepare_s": round(prep, 1), "build_s": round(r.build_seconds, 1), "sim_s": round(r.sim_seconds, 3)}
    r = dataclasses.replace(r, build_seconds=0.0, sim_seconds=0.0)
    return {"shard": shard, "indices": indices, "result": r.to_dict(), "worker": os.getpid(), "timing": timing}


def shards_of(indices: list[int], shard_size: int) -> list[list[int]]:
    return [indices[i:i + shard_size] for i in range(0, len(indices), shard_size)]


def _shard_file(work: Path, shard: int) -> Path:
    return work / f"shard-{shard:05d}.json"


def _write(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def open_work(work: Path, key: dict, resume: bool) -> set[int]:
    """Prepare the shard folder; return the shards already done (``resume``)."""
    work.mkdir(parents=True, exist_ok=True)
    cfg = work / "config.json"
    if resume and cfg.exists():
        old = json.loads(cfg.read_text())
        if old != key:
            diff = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
            raise QexitError(f"{work} holds shards of another configuration (differs in: {', '.join(diff)}); "
                             f"rerun without --resume to start over, or give another --work folder")
        return {int(f.stem.split("-")[1]) for f in work.glob("shard-*.json")}
    for f in list(work.glob("shard-*.json")) + list(work.glob("shard-*.tmp")):
        f.unlink()
    _write(cfg, key)
    return set()


def run(spec: RunSpec, indices: list[int], shard_size: int = 10, workers: int = 1, cluster: str | None = None,
        work: Path = Path("reports/.verify-run-shards"), resume: bool = False,
        progress: bool = True) -> tuple[Result, dict]:
    """Run every shard not yet in ``work`` and merge all of them (module docstring): the merged
    result (``sim.run.summary`` lists its figures) and the timing of this call."""
    check_workers(workers)
    if shard_size < 1:
        raise QexitError(f"--shard-size {shard_size}: give at least 1 image a shard")
    if not indices:
        raise QexitError("no images to run; give --images >= 1")
    work = Path(work)
    shards = shards_of(indices, shard_size)
    done = open_work(work, spec.key(indices, shard_size), resume)
    todo = [i for i in range(len(shards)) if i not in done]
    t0 = time.time()
    bar = tqdm(total=len(indices), initial=sum(len(shards[i]) for i in done), unit="img", disable=not progress,
               desc=f"verify run ({'cluster' if cluster else f'{workers} worker(s)'})")
    new_images = 0

    def finished(res: dict) -> None:
        nonlocal new_images
        _write(_shard_file(work, res["shard"]), res)
        new_images += len(res["indices"])
        bar.update(len(res["indices"]))
        bar.set_postfix_str(f"{new_images / max(time.time() - t0, 1e-9):.2f} img/s")

    try:
        map_tasks(run_shard, [(spec, i, shards[i]) for i in todo], workers, cluster, finished)
    finally:
        bar.close()
    wall = time.time() - t0
    timing = {"wall_s": round(wall, 1), "sim_s": round(sum(json.loads(_shard_file(work, i).read_text())["timing"]["sim_s"]
                                                          for i in range(len(shards))), 3),
              "images_computed": new_images,
              "images_per_s": round(new_images / wall, 3) if wall > 0 and new_images else None,
              "workers": "cluster " + cluster if cluster else workers, "shards_resumed": len(done)}
    return merge(work, len(shards)), timing


def confirm(intmodel: str, exit_path: str, machines: list[Machine], images: int, workers: int = 1,
            cluster: str | None = None, work: Path = Path("reports/.sweep-confirm"),
            progress: bool = True) -> list[dict]:
    """``qexit sweep --confirm``: the first ``images`` test images through the early-exit RTL on
    each machine (its L x L array and memory), the same run and
    checks as ``verify run``: exit layers, classes and decisions against the golden model, and
    each image's cycles against the cost model that priced the sweep."""
    out = []
    for m in machines:
        spec = RunSpec(intmodel, exit_path, m)
        r, timing = run(spec, list(range(images)), max(1, -(-images // workers)), workers, cluster,
                        Path(work) / f"{m.lanes}x{m.lanes}-{m.bandwidth:g}", progress=progress)
        s = sim_run.summary(r)
        out.append({"rows": m.rows, "cols": m.cols, "bandwidth": m.bandwidth,
                    **{k: s[k] for k in ("images", "matched", "decisions_matched", "decisions", "cycles_measured",
                                         "cycles_predicted", "cycles_equal", "passed")},
                    "wall_s": timing["wall_s"]})
    return out


def check_workers(workers: int) -> None:
    if workers < 1:
        raise QexitError(f"--workers {workers}: give at least 1 worker")


def map_tasks(fn, tasks: list[tuple], workers: int = 1, cluster: str | None = None, finished=None) -> None:
    """Run ``fn(*args)`` for every tuple of ``tasks`` and hand each result to ``finished`` as it
    arrives: here, one after another, with 1 worker and no ``cluster``; else on a Dask
    ``LocalCluster`` of ``workers`` single-threaded processes, or on the scheduler at
    ``cluster``. A task whose worker dies is rerun elsewhere; one that raises, ``RETRIES``
    more times. Both the sharded RTL run and ``qexit sweep`` go through here."""
    check_workers(workers)
    if not tasks:
        return
    if workers == 1 and cluster is None:
        for args in tasks:
            finished(fn(*args))
        return
    try:
        from dask.distributed import Client, LocalCluster, as_completed  # lazy: the optional dist extra
    except ImportError:
        raise QexitError("Dask is not installed: pip install -e .[dist] (or `make setup`)") from None
    local = None
    try:
        if cluster:
            try:
                client = Client(cluster, timeout=10)
            except (OSError, TimeoutError) as err:
                raise QexitError(f"cannot reach the Dask scheduler at {cluster} ({type(err).__name__}); start one "
                                 f"(`dask scheduler`) or drop --cluster to run on this machine") from None
        else:
            local = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=None)
            client = Client(local)
        with client:
            futures = [client.submit(fn, *args, retries=RETRIES, pure=False) for args in tasks]
            for fut in as_completed(futures):
                finished(fut.result())
    finally:
        if local is not None:
            local.close()


def merge(work: Path, n_shards: int) -> Result:
    """The shards' results in shard order as one (``Result.merge``; the per-shard timings are
    kept apart, so the merge is the same for any number of workers)."""
    parts = []
    for i in range(n_shards):
        f = _shard_file(work, i)
        if not f.exists():
            raise QexitError(f"shard {i} is missing from {work}; rerun with --resume to compute it")
        parts.append(Result.from_dict(json.loads(f.read_text())["result"]))
    return Result.merge(parts)
