"""The integer golden model: accurate, integer-only end to end, deterministic."""
import pytest
import torch
from torch.overrides import TorchFunctionMode

from model import intops
from model.errors import QexitError
from model.golden import Golden, hidden_states, run_batched
from model.train import evaluate


class NoFloat(TorchFunctionMode):
    """Raises on any torch call that takes or returns a floating-point tensor."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        for t in _tensors(args) + _tensors(kwargs.values()) + _tensors([out]):
            if t.is_floating_point():
                raise AssertionError(f"float tensor in {getattr(func, '__name__', func)}")
        return out


def _tensors(xs):
    found = []
    for x in xs:
        if isinstance(x, torch.Tensor):
            found.append(x)
        elif isinstance(x, (list, tuple)):
            found += _tensors(x)
    return found


def test_golden_is_integer_only_end_to_end(tiny_intmodel, fmnist_test):
    g = Golden(tiny_intmodel)
    images = fmnist_test.images[:4]
    with NoFloat(), intops.integer_only():
        out = g.forward(images)
    assert out.logits.dtype == torch.int64 and all(b.dtype == torch.int64 for b in out.blocks)
    assert all(b.min() >= -128 and b.max() <= 127 for b in out.blocks)


def test_exact_blas_sums_give_the_integer_only_outputs(tiny_intmodel, fmnist_test):
    """The default product sums on float BLAS (intops.int_matmul) equal the int64 definition:
    every block, the embedding, the logits and every overflow count."""
    images = fmnist_test.images[:64]
    fast = Golden(tiny_intmodel).forward(images)
    with intops.integer_only():
        exact = Golden(tiny_intmodel).forward(images)
    for a, b in zip(fast.blocks + [fast.embedding, fast.logits], exact.blocks + [exact.embedding, exact.logits]):
        assert torch.equal(a, b)
    assert fast.overflow.counts == exact.overflow.counts and fast.overflow.totals == exact.overflow.totals


def test_nofloat_guard_can_fail(tiny_intmodel, fmnist_test):
    g = Golden(tiny_intmodel, float_kernels=("gelu",))
    with pytest.raises(AssertionError, match="float tensor"):
        with NoFloat():
            g.forward(fmnist_test.images[:2])


def test_golden_accuracy_close_to_fp32(tiny_trained, tiny_intmodel, fmnist_test):
    model, _ = tiny_trained
    acc_fp = evaluate(model, fmnist_test)
    out = run_batched(tiny_intmodel, fmnist_test.images)
    acc_int = (out.predictions == fmnist_test.labels).float().mean().item()
    assert acc_int >= acc_fp - 0.04, (acc_int, acc_fp)


def test_golden_tracks_fp32_blocks(tiny_trained, tiny_intmodel, fmnist_test):
    model, _ = tiny_trained
    x = fmnist_test.images[:32]
    with torch.no_grad():
        ref = model.hidden_states(x)
    for h, q in zip(ref, hidden_states(tiny_intmodel, x)):
        assert torch.nn.functional.cosine_similarity(h.flatten(1), q.flatten(1)).mean() > 0.95


def test_same_outputs_on_two_runs_and_thread_counts(tiny_intmodel, fmnist_test):
    x = fmnist_test.images[:24]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        a = Golden(tiny_intmodel).forward(x)
        torch.set_num_threads(2)
        b = Golden(tiny_intmodel).forward(x)
        c = Golden(tiny_intmodel).forward(x)
    finally:
        torch.set_num_threads(threads)
    for o in (b, c):
        assert torch.equal(a.logits, o.logits)
        assert all(torch.equal(p, q) for p, q in zip(a.blocks, o.blocks))


def test_batching_does_not_change_results(tiny_intmodel, fmnist_test):
    x = fmnist_test.images[:20]
    whole = Golden(tiny_intmodel).forward(x)
    parts = run_batched(tiny_intmodel, x, batch_size=7, keep_blocks=True)
    assert torch.equal(whole.logits, parts.logits)
    assert torch.equal(whole.blocks[-1], parts.blocks[-1])


def test_bad_images(tiny_intmodel):
    g = Golden(tiny_intmodel)
    with pytest.raises(QexitError, match="uint8"):
        g.forward(torch.zeros(1, 1, 28, 28))
    with pytest.raises(QexitError, match="images have shape"):
        g.forward(torch.zeros(1, 1, 32, 32, dtype=torch.uint8))
    with pytest.raises(QexitError, match="unknown float kernels"):
        Golden(tiny_intmodel, float_kernels=("relu",))


def test_saturation_is_counted(tiny_intmodel, fmnist_test):
    params = dict(tiny_intmodel.params)
    params["b0.fc2.m"] = params["b0.fc2.m"].clone() * 0 + (2 ** 31 - 1)   # a huge gain: forces saturation
    params["b0.fc2.shift"] = params["b0.fc2.shift"].clone() * 0 + 1
    im = type(tiny_intmodel)(tiny_intmodel.config, params, tiny_intmodel.scales)
    out = Golden(im).forward(fmnist_test.images[:4])
    assert out.overflow.counts["b0.fc2"] > 0
