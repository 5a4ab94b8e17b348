"""Every operation of the shipped model through the RTL, on real weights and real activations.

``model.golden.Golden`` runs K test images and records every operation it performs (its
integer inputs and output). Each operation then runs on the RTL block that will compute it
in the accelerator, with the same inputs, and every output integer is compared with the
golden model's:

* GEMMs on the engine (``sim.harness`` on Verilator): the patch embedding (per-token bias),
  QKV, projection, FC1, FC2 and the head's projection with their IntModel weights streamed at
  ``bandwidth``; attention per head: Q·Kᵀ on the int32 path (K as the streamed operand) and
  P·V requantized with the ctx multiplier (Vᵀ as the streamed operand); the class logits on
  the int32 path;
* LayerNorm, softmax, GELU and the residual adds on their streaming units.

Because each operation's inputs are the golden model's own, a match everywhere means the RTL
blocks, chained, compute the golden model's integers from pixels to logits. The host
sequences the operations here, one block at a time; ``sim.block`` runs the same model on the
layer engine, whose controller chains them on chip.
"""
from __future__ import annotations

import torch

from hw.cost import Machine
from hw.rtl import gemm
from model import intops
from model.errors import QexitError
from model.golden import Golden
from model.quantize import IntModel
from sim import gemm as verify
from sim import packing as host
from sim import units as sim_units
from sim.harness import check_machine
from sim.result import Result


def record_ops(im: IntModel, images: torch.Tensor) -> tuple[list[tuple], torch.Tensor]:
    """(the golden model's operations, as (kind, name, inputs, output), its predictions)."""
    ops: list[tuple] = []
    out = Golden(im, record=lambda kind, name, inputs, output: ops.append((kind, name, inputs, output))).forward(images)
    return ops, out.logits.argmax(-1)


def _gemm_case(name: str, a, w, bias, mult, shift, expected, raw: bool, seed: int) -> dict:
    return {"name": name, "seed": seed, "a": a, "w": w, "bias": bias, "mult": mult, "shift": shift,
            "raw": raw, "expected": expected}


def gemm_cases(ops: list[tuple]) -> list[dict]:
    """One engine case per GEMM and per image (per head for attention)."""
    cases = []
    for kind, name, x, out in ops:
        if kind == "gemm":
            a = x["a"] if x["a"].dim() == 3 else x["a"][None]          # head.proj: all images at once
            o = out if out.dim() == 3 else out[None]
            bias = x["bias"] if x["bias"] is not None else torch.zeros(x["w"].shape[0], dtype=torch.int64)
            for i in range(a.shape[0]):
                cases.append(_gemm_case(name, a[i], x["w"], bias, x["mult"], x["shift"], o[i], False, i))
        elif kind == "matmul":
            b = x["b"]
            if name.endswith(".scores") or name.endswith(".ctx"):         # (n, heads, ...) per head
                n, h = x["a"].shape[:2]
                for i in range(n):
                    for j in range(h):
                        w = b[i, j].t()                                   # a @ b = a @ w.T
                        zeros = torch.zeros(w.shape[0], dtype=torch.int64)
                        if name.endswith(".scores"):
                            mult, shift, raw = zeros, torch.ones_like(zeros), True
                        else:
                            mult, shift, raw = x["mult"].expand(w.shape[0]), x["shift"].expand(w.shape[0]), False
                        cases.append(_gemm_case(f"{name}.h{j}", x["a"][i, j], w, zeros, mult.clone(), shift.clone(),
                                                out[i, j], raw, i))
            else:                                                         # head.logits: all images
                w = b.t()
                zeros = torch.zeros(w.shape[0], dtype=torch.int64)
                cases.append(_gemm_case(name, x["a"], w, zeros, zeros, torch.ones_like(zeros), out, True, 0))
    return cases


def unit_cases(im: IntModel, ops: list[tuple]) -> dict[str, list[dict]]:
    """The streaming units' cases, per unit: one case per operation (all images together)."""
    cases: dict[str, list[dict]] = {"layernorm": [], "softmax": [], "gelu": [], "add": []}
    for kind, name, x, out in ops:
        if kind == "layernorm":
            rows = x["x"].reshape(-1, x["x"].shape[-1])
            case = sim_units.layernorm_case(rows, im.prefix(name))
            cases[kind].append({**case, "name": name, "rows": rows.shape[0], "expected": out.reshape(-1, sim_units.LANES)})
        elif kind == "softmax":
            t = x["scores"].shape[-1]
            prm = {k: int(v) for k, v in im.prefix(name).items()}
            cases[kind].append({"name": name, "ports": {"length": t, **prm}, "rows": x["scores"].numel() // t,
                                "inputs": sim_units.beats(x["scores"].reshape(-1, t), intops.INT32_MAX),
                                "expected": sim_units.beats(out.reshape(-1, t), 0)})
        elif kind == "gelu":
            prm = {k: int(v) for k, v in im.prefix(name).items()}
            cases[kind].append({"name": name, "ports": {"qb": prm["qb"], "qc": prm["qc"], "mult": prm["m"],
                                                        "shift": prm["shift"]},
                                "inputs": x["x"].reshape(-1, sim_units.LANES),
                                "expected": out.reshape(-1, sim_units.LANES)})
        elif kind == "add":
            prm = {k: int(v) for k, v in im.prefix(name).items()}
            pairs = torch.stack([x["a"].reshape(-1), x["b"].reshape(-1)], -1).reshape(-1, sim_units.LANES, 2)
            cases[kind].append({"name": name, "ports": prm, "inputs": pairs,
                                "expected": out.reshape(-1, sim_units.LANES)})
    return cases


def _layer(name: str) -> str:
    return name.split(".")[0]


def _tally(table: dict, key: str, matched: int, total: int) -> None:
    row = table.setdefault(key, {"matched": 0, "total": 0})
    row["matched"] += matched
    row["total"] += total


def verify_model_ops(im: IntModel, images: torch.Tensor, machine: Machine, *,
                     simulator: str | None = None, progress=print) -> Result:
    """Run every operation of ``im`` on ``images`` through the RTL (the GEMMs on the engine of
    ``machine``'s R x C array, the weights streamed at its bandwidth and latency) and compare
    with the golden model. Matched and total count output integers; the cycles are the GEMMs'
    (start to done, against ``hw.cost.schedule``); the figures: ``images``, ``by_op`` and
    ``by_layer`` (matched, total), ``units`` (each unit's summary), ``cycle_errors`` (GEMMs off
    their prediction) and ``predictions_matched``. A GEMM the simulation returned no result for
    counts its outputs as not matched."""
    check_machine(machine)
    ops, predictions = record_ops(im, images)
    by_op: dict[str, dict] = {}
    by_layer: dict[str, dict] = {}
    cases = gemm_cases(ops)
    cfg = gemm.GemmConfig(machine.rows, machine.cols, max_m=max(256, len(images)), max_k=3072, max_n=3072,
                          max_raw_n=max(256, im.config.num_classes), max_bias_n=im.config.width)
    for c in cases:
        c["bandwidth"], c["latency"] = machine.bandwidth, machine.latency
    progress(f"  {len(cases)} GEMMs on the {machine.rows}x{machine.cols} engine", flush=True)
    res = verify.run_cases(cfg, cases, simulator=simulator)
    if len(res.records) > len(cases):
        raise QexitError(f"the GEMM testbench returned {len(res.records)} results for {len(cases)} cases")
    logs = [res.log] if res.log else []
    for i, case in enumerate(cases):
        record = res.records[i] if i < len(res.records) else None
        # the testbench compares the RTL with model.intops; this ties that to the golden model
        same = torch.equal(host.reference(case["a"], case["w"], case["bias"], case["mult"], case["shift"],
                                          case["raw"]), case["expected"])
        matched = record["matched"] if record is not None and same else 0
        kind = "attention" if (".scores." in case["name"] or ".ctx." in case["name"]) else \
            ("logits" if case["raw"] else "gemm")
        _tally(by_op, kind, matched, case["expected"].numel())
        _tally(by_layer, _layer(case["name"]), matched, case["expected"].numel())
    units = {}
    for name, unit_list in unit_cases(im, ops).items():
        if not unit_list:
            continue
        progress(f"  {name}: {len(unit_list)} operations", flush=True)
        ur = sim_units.run_unit(name, unit_list, simulator=simulator)
        units[name] = ur.summary()
        logs += [ur.log] if ur.log else []
        _tally(by_op, name, ur.matched, ur.total)
        counts = [r["matched"] for r in ur.records] or [0] * len(unit_list)
        for case, matched in zip(unit_list, counts, strict=True):
            _tally(by_layer, _layer(case["name"]), matched, case["expected"].numel())
    logits = next(out for kind, name, _, out in ops if name == "head.logits")
    got = [r for r in res.records if r["name"] == "head.logits"]
    predictions_matched = bool(got) and got[0]["matched"] == got[0]["total"] and \
        torch.equal(logits.argmax(-1), predictions)
    out = Result("model", sum(v["matched"] for v in by_op.values()), sum(v["total"] for v in by_op.values()),
                 cycles_measured=res.cycles_measured, cycles_predicted=res.cycles_predicted,
                 figures={"images": len(images), "by_op": by_op, "by_layer": by_layer, "units": units,
                          "cycle_errors": res.cycle_errors, "predictions_matched": predictions_matched},
                 simulator=res.simulator, build_seconds=res.build_seconds, sim_seconds=res.sim_seconds,
                 log="\n\n".join(logs))
    out.passed = out.total > 0 and out.matched == out.total and predictions_matched and res.cycle_errors == 0
    return out
