"""model/exits/pruning.py: INR (Eq. 5) and the pathological-layer rule (Eq. 6)."""
import numpy as np
import pytest

from model.errors import QexitError
from model.exits.pruning import information_to_noise, prune_layers


def test_inr_definition_and_fp32_floor():
    inr = information_to_noise([0.8, 0.9], {"nsr": [0.1, 0.3], "mse": [1, 2]})
    assert np.allclose(inr, [8.0, 3.0])
    fp32 = information_to_noise([0.5, 0.7], {"nsr": [0.0, 0.0]})
    assert np.all(np.isfinite(fp32)) and fp32[1] > fp32[0]


@pytest.mark.parametrize("noise", [{"rel_err": [0.1]}, {"nsr": [0.1, 0.2, 0.3]}])
def test_inr_bad_noise_profile(noise):
    with pytest.raises(QexitError) as err:
        information_to_noise([0.8, 0.9], noise)
    assert "\n" not in str(err.value)


def test_smooth_exponential_noise_drops_nothing():
    acc = np.full(12, 0.8)
    nsr = 0.01 * 1.6 ** np.arange(12)  # super-linear, but smooth
    kept, dropped = prune_layers(range(1, 12), information_to_noise(acc, {"nsr": nsr}), {"nsr": nsr})
    assert kept == list(range(1, 12)) and dropped == []


def test_planted_spike_is_dropped_with_a_reason():
    acc = np.linspace(0.6, 0.9, 12)
    nsr = 0.01 * 1.3 ** np.arange(12)
    nsr[8] *= 2.5  # layer 9 spikes, although its head is more accurate than layer 8's
    kept, dropped = prune_layers([6, 7, 8, 9, 10, 11], information_to_noise(acc, {"nsr": nsr}), {"nsr": nsr})
    assert kept == [6, 7, 8, 10, 11]
    assert [d["layer"] for d in dropped] == [9]
    assert dropped[0]["ratio"] < 1 / 1.5 and "noise spike" in dropped[0]["reason"]


def test_spike_at_the_edges():
    nsr = {"nsr": [1.0, 0.1, 0.1, 0.1]}
    kept, dropped = prune_layers([1, 2, 3], information_to_noise([0.8] * 4, nsr), nsr)
    assert kept == [2, 3] and dropped[0]["layer"] == 1


def test_accuracy_dip_without_noise_spike_is_kept():
    """FP32 has no noise: a weak head is not a noise spike."""
    acc = np.array([0.8, 0.2, 0.8, 0.8])
    for nsr in ([0.0] * 4, [0.1, 0.1, 0.1, 0.1]):
        kept, dropped = prune_layers([1, 2, 3], information_to_noise(acc, {"nsr": nsr}), {"nsr": nsr})
        assert kept == [1, 2, 3] and dropped == []


def test_empty_after_pruning_and_bad_kappa_are_clear_errors():
    nsr = {"nsr": [0.1, 1.0, 0.1, 0.1]}
    inr = information_to_noise([0.8] * 4, nsr)
    with pytest.raises(QexitError) as err:
        prune_layers([2], inr, nsr)
    assert "\n" not in str(err.value) and "--candidates" in str(err.value)
    with pytest.raises(QexitError):
        prune_layers([2], inr, nsr, kappa=1.0)
