"""The per-epoch checkpoint: everything needed to continue a run exactly where it stopped.

It holds the model's and optimizer's state, the RNG states, the configuration, the data's
fingerprint and the history so far. It is written atomically after each complete epoch, so a
Ctrl-C (or a crash) at any moment leaves the last complete checkpoint intact.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from flowprof import atomic
from flowprof.errors import CheckpointError

FORMAT = 1
FILE_NAME = "checkpoint.pt"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> None:
    """Write ``state`` (tensors, numbers, strings, lists and dicts of them) atomically."""
    # Serialised in memory, then written: torch's zip writer reports a short write (a full disk)
    # as "unexpected pos", where a plain write raises the OSError that names it.
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    atomic.write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (safely: ``weights_only``)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(
            f"no checkpoint at {path}: nothing to resume (train without --resume)"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several kinds for a damaged file
        raise CheckpointError(f"cannot read checkpoint {path}: {type(exc).__name__}") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a flowprof training checkpoint (format {FORMAT})")
    return state
