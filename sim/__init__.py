"""Simulation: the RTL run under cocotb on Verilator (or Icarus) against the integer golden model.

One module per thing it verifies: ``gemm`` (the GEMM engine), ``units`` (the streaming units
and the exit comparator on random rows), ``model`` (every operation of an IntModel on its
block), ``block`` (the layer engine), ``head`` (the exit head: hls4ml and RTL), ``comparator``
(the exit decisions of the test split), ``run`` (the early-exit accelerator); each returns a
``result.Result``. Beside them: ``dist`` (the run sharded over Dask), ``harness`` (the HDL
harnesses with their memory models), ``packing`` (host-side packing and the GEMM protocol),
``simulator`` (building and running cocotb, and the free-running Verilator main), and the
cocotb testbenches in ``tb``.
"""
