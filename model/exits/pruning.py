"""Information-to-Noise Ratio (Eq. 5) and Pathological Layer Pruning (Eq. 6).

The paper's equations were lost in extraction; these are the definitions used here.

**Eq. 5.** ``INR_l = A_l / NSR_l``: the information a layer's exit carries (``A_l``, the
standalone accuracy of its SSA exit head on the gating split) over the quantization noise it
carries (``NSR_l``, Eq. 1: ‖H^q_l − H_l‖ / ‖H_l − H_{l−1}‖). An FP32 backbone has no noise;
``NSR`` is floored at ``NSR_FLOOR`` so INR stays finite and then just follows the accuracy.

**Eq. 6.** A layer is *pathological* when its INR falls well below the trend of its
neighbours because of a local noise spike (the paper's Layer 9, whose MSE is about twice
Layer 8's while its accuracy is higher):

    drop l  iff  INR_l < ref(INR)_l / κ   and   NSR_l > ref(NSR)_l,
    ref(x)_l = sqrt(x_{l−1} · x_{l+1})

(the geometric mean of the two adjacent layers, which follows a smooth exponential trend
exactly; at the first and last layer of the backbone the one existing neighbour is used).
The second condition keeps the rule about noise: a dip that comes only from a weaker head
(as in FP32, where NSR is 0 everywhere) is not a noise spike. Neighbours are adjacent
*backbone* layers, not adjacent candidates, so the rule does not depend on the candidate set.
κ > 1 sets how anomalous a dip must be (``PRUNE_KAPPA``).
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from model.errors import QexitError

NSR_FLOOR = 1e-6
PRUNE_KAPPA = 1.5


def information_to_noise(accuracy: Sequence[float], noise: Mapping[str, Sequence[float]]) -> np.ndarray:
    """INR per layer (index 0 = layer 1) from per-layer head accuracy and a noise dict with
    key ``"nsr"`` (``model.qirc``'s per-layer analysis, or ``Features.noise()``)."""
    if "nsr" not in noise:
        raise QexitError("the noise profile has no 'nsr' list; pass the per-layer analysis of model.qirc")
    acc = np.asarray(accuracy, dtype=np.float64)
    nsr = np.asarray(noise["nsr"], dtype=np.float64)
    if acc.shape != nsr.shape:
        raise QexitError(f"per-layer accuracy has {acc.size} layers but the noise profile has {nsr.size}")
    return acc / np.maximum(nsr, NSR_FLOOR)


def _neighbour_ref(x: np.ndarray, i: int) -> float:
    """Geometric mean of x at the layers adjacent to index i (one neighbour at the ends)."""
    idx = [j for j in (i - 1, i + 1) if 0 <= j < len(x)]
    return math.exp(np.mean(np.log(np.maximum(x[idx], 1e-300))))


def prune_layers(candidates: Sequence[int], inr: Sequence[float], noise: Mapping[str, Sequence[float]],
                 kappa: float = PRUNE_KAPPA) -> tuple[list[int], list[dict]]:
    """(kept candidates, one record per candidate dropped by Eq. 6 with the reason).

    ``candidates`` are 1-based layers; ``inr`` and ``noise["nsr"]`` have one entry per backbone layer.
    """
    if not kappa > 1:
        raise QexitError(f"the pruning factor kappa={kappa} must be greater than 1")
    inr = np.asarray(inr, dtype=np.float64)
    nsr = np.maximum(np.asarray(noise["nsr"], dtype=np.float64), NSR_FLOOR)
    kept, dropped = [], []
    for layer in candidates:
        i = layer - 1
        ref, ref_nsr = _neighbour_ref(inr, i), _neighbour_ref(nsr, i)
        if inr[i] < ref / kappa and nsr[i] > ref_nsr:
            dropped.append({"layer": layer, "inr": float(inr[i]), "neighbour_ref": ref,
                            "ratio": float(inr[i] / ref), "nsr": float(nsr[i]), "neighbour_nsr": ref_nsr,
                            "reason": f"INR {inr[i]:.3g} is {ref / inr[i]:.2f}x below its neighbours' "
                                      f"geometric mean {ref:.3g} (limit {kappa:g}x) and its NSR {nsr[i]:.3g} "
                                      f"exceeds theirs ({ref_nsr:.3g}): a noise spike"})
        else:
            kept.append(layer)
    if not kept:
        raise QexitError(f"no candidate layer is left after pathological-layer pruning (all of {list(candidates)} "
                         f"were dropped with kappa={kappa:g}); pass more --candidates or a larger --prune-kappa")
    return kept, dropped
