"""Simulation: cocotb testbenches run on Verilator (or Icarus) against the integer golden model."""
