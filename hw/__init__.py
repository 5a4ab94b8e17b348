"""The accelerator: its RTL (rtl/), the program it runs (program.py), its cost model (cost/) and the drivers of outside tools (tools/)."""
