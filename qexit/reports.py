"""Writing a step's report folder atomically: reports/<step>/{summary.json, README.md, *.png}.

What goes into README.md and the PNGs is made in qexit/render/ (one module per report)."""
from __future__ import annotations

import json
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

from model.errors import QexitError

__all__ = ["REPORTS_DIR", "report_dir", "write_summary", "write_text"]

REPORTS_DIR = Path("reports")


@contextmanager
def report_dir(step: str, root: Path | str = REPORTS_DIR):
    """Yield a temporary folder; on success it replaces ``root/step`` in one move."""
    root = Path(root)
    final = root / step
    try:
        root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{step}.", dir=root))
    except OSError as err:
        raise QexitError(f"cannot write the report folder {final} ({err.strerror or err}); "
                         f"choose a writable root with --out") from None
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        old = root / f".{step}.old"
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        tmp.rename(final)


def write_summary(folder: Path, summary: dict) -> None:
    (Path(folder) / "summary.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")


def write_text(path: Path | str, text: str) -> None:
    """Write one file (its folder made), or one line that says why it cannot be written."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    except OSError as err:
        raise QexitError(f"cannot write {path} ({err.strerror or err}); choose a writable path with --out") from None
