"""The model side, the truth: the FP32 ViT, data, the quantizer and IntModel, the integer
kernels and golden model, QIRC and the early exits. It imports nothing else of the project
(the layers contract in pyproject.toml, checked by `lint-imports`)."""
from model.errors import QexitError

__all__ = ["QexitError"]
