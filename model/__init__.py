"""qexit model side: FP32 ViT, integer golden model, exits. Imports nothing from hw/sim/qexit."""
from model.errors import QexitError

__all__ = ["QexitError"]
