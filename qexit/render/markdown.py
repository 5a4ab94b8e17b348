"""The Markdown table of every report (the one definition in the tree)."""


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A GitHub Markdown table; floats as 4 significant digits, everything else as ``str``."""
    def fmt(v):
        return f"{v:.4g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)
