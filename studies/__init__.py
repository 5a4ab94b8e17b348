"""Studies built on the cost model and the exit evaluation: mixed-precision search and design-space sweeps."""
