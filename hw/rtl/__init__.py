"""The RTL of the accelerator, in Amaranth: PE, systolic array, GEMM engine, streaming units, layer engine and its instruction set, exit head, exit comparator."""
