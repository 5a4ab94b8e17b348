"""qexit: the command line (one module per verb in commands/) and report rendering (render/). It imports every other layer; nothing imports it (the layers contract in pyproject.toml)."""
