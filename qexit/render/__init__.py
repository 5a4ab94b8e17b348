"""Rendering of reports: Markdown and PNG plots, one module per step's report (``markdown``
holds the table helper they share). The commands compute and hand their results here; nothing
below ``qexit`` draws or writes Markdown."""
