"""qexit: the command line and the report flow. Imports model, hw and sim; nothing imports it."""
