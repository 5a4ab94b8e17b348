"""sim/model.py: every operation of an IntModel (the tiny fixture) through the RTL, against
the golden model; and the comparison can fail."""
import pytest

from sim import model as model_ops


@pytest.mark.simulator()
def test_every_operation_of_the_tiny_model_is_bit_exact(tiny_intmodel, fmnist_test, one_thread):
    res = model_ops.verify_model_ops(tiny_intmodel, fmnist_test.images[:1], rows=4, cols=4, bandwidth=2,
                                     latency=5, progress=lambda *a, **k: None)
    assert res.passed, (res.by_op, res.gemm.log)
    assert set(res.by_op) == {"gemm", "attention", "logits", "layernorm", "softmax", "gelu", "add"}
    assert set(res.by_layer) == {"embed", "b0", "b1", "head"}
    assert res.gemm.cycles_measured == res.gemm.cycles_predicted


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
    res = model_ops.verify_model_ops(tiny_intmodel, fmnist_test.images[:1], rows=4, cols=4,
                                     progress=lambda *a, **k: None)
    assert not res.passed and res.by_layer["b0"]["matched"] < res.by_layer["b0"]["total"]


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
