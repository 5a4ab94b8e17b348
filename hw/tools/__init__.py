"""Drivers of outside tools: yosys/nextpnr-ecp5 synthesis and the hls4ml exit head."""
