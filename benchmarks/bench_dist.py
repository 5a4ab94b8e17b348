"""The sharded early-exit RTL run (sim/dist.py) on the shipped model: throughput at 1 and 2
workers, the merge's determinism, a worker killed mid-run, and a killed run resumed.

    python benchmarks/bench_dist.py --images 40 --shard-size 5

Needs `make report` (or `qexit quantize` and `qexit exits`) first, for the IntModel and the
exit path under reports/. Prints the figures and writes benchmarks/results/bench_dist.json.

1. `--images` test images (seed 1's draw) on 1 worker, then on 2 (a local Dask cluster);
   images per second of each, counted from the start of the run (the workers' preparation
   included), and whether the two summaries are equal apart from `timing`.
2. Fault: the same images on 2 workers, and once the first shards are done one worker
   process is killed (SIGKILL, the process that runs the simulator); Dask runs its shard
   again. The summary must equal step 1's.
3. Kill and resume: `qexit verify run` as a process, killed (its whole process group) once
   some shards are on disk, then run again with `--resume`: it computes only the missing
   shards, and the summary must equal step 1's.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch

from hw.cost import Machine
from sim import dist, run as sim_run

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def strip(r) -> str:
    """A merged run as JSON, for comparing runs (the timings are apart from it)."""
    return json.dumps(r.to_dict(), sort_keys=True)


def kill_one_worker_later(work: Path, after_shards: int, log: list) -> threading.Thread:
    """Once ``after_shards`` shards are on disk, SIGKILL the parent of one running simulator
    (a Dask worker process) and the simulator."""
    import psutil

    def go():
        while len(list(work.glob("shard-*.json"))) < after_shards:
            time.sleep(0.5)
        for p in psutil.process_iter(["name", "cmdline"]):
            if any("qexit_run_" in c for c in (p.info["cmdline"] or [])[:1]):
                worker = p.parent()
                log.append({"killed_worker_pid": worker.pid, "simulator_pid": p.pid, "at_s": time.time()})
                worker.send_signal(signal.SIGKILL)
                p.send_signal(signal.SIGKILL)
                return
    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--shard-size", type=int, default=5)
    ap.add_argument("--intmodel", default="reports/quantize/intmodel.pt")
    ap.add_argument("--exit-path", default="reports/exits/exit_path.pt")
    ap.add_argument("--work", type=Path, default=Path("/tmp/qexit-bench-dist"))
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bench_dist.json")
    a = ap.parse_args()



    idx = torch.randperm(10_000, generator=torch.Generator().manual_seed(1))[:a.images].tolist()
    spec = dist.RunSpec(a.intmodel, a.exit_path, Machine(8, 8.0, 20))
    res = {"images": a.images, "shard_size": a.shard_size, "cpus": os.cpu_count()}

    one, t_one = dist.run(spec, idx, a.shard_size, 1, work=a.work / "w1", progress=False)
    two, t_two = dist.run(spec, idx, a.shard_size, 2, work=a.work / "w2", progress=False)
    s = sim_run.summary(one)
    res["one_worker"] = {**t_one, "passed": one.passed, "decisions": s["decisions"],
                         "decisions_matched": s["decisions_matched"], "cycles_equal": s["cycles_equal"]}
    res["two_workers"] = t_two
    res["same_summary_1_and_2"] = strip(one) == strip(two)
    res["speedup_2_over_1"] = round(t_two["images_per_s"] / t_one["images_per_s"], 3)
    print(f"1 worker: {t_one['images_per_s']} img/s; 2 workers: {t_two['images_per_s']} img/s "
          f"({res['speedup_2_over_1']}x); same summary: {res['same_summary_1_and_2']}; passed: {one.passed}",
          flush=True)

    log: list = []
    kill_one_worker_later(a.work / "fault", 2, log)
    fault, t_fault = dist.run(spec, idx, a.shard_size, 2, work=a.work / "fault", progress=False)
    res["fault"] = {"killed": log, "timing": t_fault, "same_summary": strip(fault) == strip(one)}
    print(f"worker killed: {bool(log)}; finished with the same summary: {res['fault']['same_summary']}", flush=True)

    cmd = [sys.executable, "-m", "qexit.cli", "verify", "run", "--images", str(a.images), "--seed", "1",
           "--shard-size", str(a.shard_size), "--workers", "2", "--work", str(a.work / "resume"), "--quiet",
           "--intmodel", a.intmodel, "--exit-path", a.exit_path]
    proc = subprocess.Popen(cmd, cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while len(list((a.work / "resume").glob("shard-*.json"))) < 3 and proc.poll() is None:
        time.sleep(0.5)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    on_disk = len(list((a.work / "resume").glob("shard-*.json")))
    again, t_again = dist.run(spec, idx, a.shard_size, 2, work=a.work / "resume", resume=True, progress=False)
    res["resume"] = {"shards_on_disk_after_kill": on_disk, "timing": t_again,
                     "same_summary": strip(again) == strip(one)}
    print(f"run killed with {on_disk} shard(s) on disk; --resume computed {t_again['images_computed']} "
          f"image(s); same summary: {res['resume']['same_summary']}", flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=1))
    print(f"wrote {a.out}")
    return 0 if res["same_summary_1_and_2"] and res["fault"]["same_summary"] and res["resume"]["same_summary"] else 1


if __name__ == "__main__":
    sys.exit(main())
