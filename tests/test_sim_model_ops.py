"""sim/model.py: every operation of an IntModel (the tiny fixture) through the RTL, against
the golden model; the comparison can fail; a GEMM result the simulation did not return is
counted, not dropped."""
import pytest

from hw.cost import Machine
from qexit.cli import main
from sim import model as model_ops
from sim.result import Result

QUIET = {"progress": lambda *a, **k: None}


@pytest.mark.simulator()
def test_every_operation_of_the_tiny_model_is_bit_exact(tiny_intmodel, fmnist_test, one_thread):
    res = model_ops.verify_model_ops(tiny_intmodel, fmnist_test.images[:1], Machine(4, 2, 5), **QUIET)
    assert res.passed, (res.by_op, res.log)
    assert set(res.by_op) == {"gemm", "attention", "logits", "layernorm", "softmax", "gelu", "add"}
    assert set(res.by_layer) == {"embed", "b0", "b1", "head"}
    assert res.cycles_measured == res.cycles_predicted and res.cycle_errors == 0


@pytest.mark.simulator()
def test_a_golden_output_that_differs_is_caught(tiny_intmodel, fmnist_test, monkeypatch, one_thread):
    real = model_ops.record_ops

    def tampered(im, images):
        ops, pred = real(im, images)
        i = next(j for j, op in enumerate(ops) if op[1] == "b0.qkv")
        kind, name, inputs, out = ops[i]
        out = out.clone()
        out.view(-1)[0] += 1                         # one integer of the golden QKV output off by 1
        ops[i] = (kind, name, inputs, out)
        return ops, pred
    monkeypatch.setattr(model_ops, "record_ops", tampered)
    res = model_ops.verify_model_ops(tiny_intmodel, fmnist_test.images[:1], Machine(4, None, 0), **QUIET)
    assert not res.passed and res.by_layer["b0"]["matched"] < res.by_layer["b0"]["total"]


def test_a_gemm_result_that_never_came_back_is_counted(tiny_intmodel, fmnist_test, monkeypatch):
    """The GEMM testbench returns one result fewer than its cases (the first one lost): its
    outputs still count in the total, unmatched, and the check fails. (No simulator: the GEMM
    and unit runs are stand-ins that match everything they return.)"""
    def gemm_run(cfg, cases, simulator=None):
        records = [{"name": c["name"], "matched": c["expected"].numel(), "total": c["expected"].numel()}
                   for c in cases[1:]]
        return Result("gemm", sum(r["matched"] for r in records), sum(r["total"] for r in records), True,
                      0, 0, records, figures={"cycle_errors": 0})

    def unit_run(name, cases, simulator=None):
        total = sum(c["expected"].numel() for c in cases)
        return Result("unit", total, total, True, records=[{"matched": c["expected"].numel()} for c in cases])
    monkeypatch.setattr(model_ops.verify, "run_cases", gemm_run)
    monkeypatch.setattr(model_ops.sim_units, "run_unit", unit_run)
    images = fmnist_test.images[:1]
    res = model_ops.verify_model_ops(tiny_intmodel, images, Machine(4, None, 0), **QUIET)
    ops, _ = model_ops.record_ops(tiny_intmodel, images)
    cases = model_ops.gemm_cases(ops)
    lost = cases[0]["expected"].numel()
    gemm_total = sum(c["expected"].numel() for c in cases)
    assert res.by_op["gemm"]["total"] + res.by_op["attention"]["total"] + res.by_op["logits"]["total"] == gemm_total
    assert res.total - res.matched == lost and not res.passed
    assert res.predictions_matched                     # the logits came back: only the lost GEMM fails


def test_record_ops_covers_the_model(tiny_intmodel, fmnist_test):
    ops, _ = model_ops.record_ops(tiny_intmodel, fmnist_test.images[:2])
    names = [name for _, name, _, _ in ops]
    assert names[0] == "embed" and names[-1] == "head.logits"
    assert sum(n.endswith(".softmax") for n in names) == 2 and sum(k == "add" for k, *_ in ops) == 4
    cases = model_ops.gemm_cases(ops)
    heads = tiny_intmodel.config.heads
    # per image: embed, 4 linears per block, 2 heads x (scores, ctx) per block; head.proj and logits once
    assert len(cases) == 2 * (1 + 2 * (4 + 2 * heads)) + 2
    assert sum(c["raw"] for c in cases) == 2 * 2 * heads + 1     # the scores and the logits are int32


def test_verify_model_help_says_the_layer_engine_is_built(capsys):
    with pytest.raises(SystemExit):
        main(["verify", "model", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "not built yet" not in out and "the layer engine" in out and "`verify block`" in out
