"""Rendering of reports: Markdown tables and PNG plots, for every step."""
