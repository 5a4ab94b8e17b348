"""The one exception type that users see as a single line."""
from pathlib import Path

import torch


class QexitError(Exception):
    """A problem with the user's input or environment, with the fix in the message.

    The CLI prints ``str(err)`` on one line and exits non-zero; nothing below it should
    let a library traceback escape for bad input.
    """


def load_artifact(path, kind: str, fmt: str, version: int, fix: str, weights_only: bool = True) -> dict:
    """Load a versioned qexit file (a dict with ``format`` and ``version``) or raise one clear line.

    ``kind`` names it for the user ("checkpoint", "IntModel"); ``fix`` says how to make a good one.
    """


    path = Path(path)
    if not path.is_file():
        raise QexitError(f"{kind} {path} does not exist; {fix}")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as err:  # torch raises many types for a truncated or corrupt file
        raise QexitError(f"{kind} {path} is truncated or corrupt ({type(err).__name__}); {fix}") from None
    if not isinstance(blob, dict) or blob.get("format") != fmt:
        raise QexitError(f"{path} is not a qexit {kind}; {fix}")
    if blob.get("version") != version:
        raise QexitError(f"{kind} {path} has version {blob.get('version')}, this qexit reads version "
                         f"{version}; {fix}")
    return blob
