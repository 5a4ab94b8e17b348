"""Amaranth RTL of the accelerator: the systolic GEMM engine and its tile schedule."""
