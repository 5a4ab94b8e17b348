"""LRA-EE early exits (Layer-wise Representation-Aware Early Exit) for the quantized ViT.

The pieces, in the order the evaluation uses them:

* ``backbones``: a ``Backbone`` per mode ("fp32", "dynamic" INT8, "int8" integer golden model):
  a ``forward`` giving the hidden states and the backbone's own final embedding and logits.
* ``features``: per-layer features the heads and gate need (SSA patch mean, [CLS] token,
  spatial-activation variance), cached on disk, plus the per-layer noise-to-signal ratio.
* ``heads``: the SSA / [CLS] exit heads (LN → MLP → cosine against the class embeddings),
  trained on cached features with hard-label or FP32-distilled supervision.
* ``gate``: the learned gate σ(w·[confidence, margin, SAV] + b), one per layer.
* ``pruning``: the Information-to-Noise Ratio (Eq. 5) and the pathological-layer rule (Eq. 6).
* ``thresholds``: routing, FLOPs accounting and Layer-adaptive Confidence Thresholding (LCT).
* ``baselines``: CLS-EE, confidence-only and PABEE (patience) exits.
* ``evaluate``: one seed of the whole evaluation on one mode, and the mean ± std over seeds.
* ``summary``: the cross-seed aggregates (summary.json, exit_distribution.json) and the Rescue verdict.
* ``report``: the README text and plots of the exits step.
"""
