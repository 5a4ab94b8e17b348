"""cocotb testbenches: each drives one harness and reports what the RTL did; the host side compares."""
