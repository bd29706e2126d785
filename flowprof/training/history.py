"""Per-epoch training history: the record, its CSV and JSON files, and reading them back.

Both files are rewritten atomically after every epoch (training.atomic), so an interrupted run
leaves the history of its last complete epoch, never half a file.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from flowprof import atomic


@dataclass(frozen=True)
class EpochRecord:
    """One epoch: mean losses (cross entropy, nats), accuracies as fractions in [0, 1].

    ``seconds`` is the epoch's wall time (training pass, evaluation and checkpoint);
    ``samples_per_s`` is the training pass's throughput alone.
    """

    epoch: int
    train_loss: float
    train_acc: float
    test_loss: float
    test_acc: float
    seconds: float
    lr: float
    samples_per_s: float

    def metrics(self) -> tuple[int, float, float, float, float, float]:
        """Everything but the timings: equal for two runs with the same seed."""
        return (self.epoch, self.train_loss, self.train_acc, self.test_loss, self.test_acc, self.lr)


COLUMNS = tuple(f.name for f in fields(EpochRecord))


def history_csv(history: Sequence[EpochRecord]) -> str:
    """The history as CSV text, one row per epoch, columns :data:`COLUMNS`."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for record in history:
        writer.writerow([repr(v) if isinstance(v, float) else v for v in asdict(record).values()])
    return out.getvalue()


def history_document(history: Sequence[EpochRecord], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The JSON document: ``meta`` (model, data, config, rule, convergence) plus ``history``."""
    return {**meta, "columns": list(COLUMNS), "history": [asdict(r) for r in history]}


def write_history(
    out_dir: str | Path, history: Sequence[EpochRecord], meta: Mapping[str, Any]
) -> tuple[Path, Path]:
    """Write ``history.csv`` and ``history.json`` in ``out_dir`` atomically; return both paths."""
    out_dir = Path(out_dir)
    csv_path, json_path = out_dir / "history.csv", out_dir / "history.json"
    atomic.write_text(csv_path, history_csv(history))
    text = json.dumps(history_document(history, meta), indent=2, allow_nan=True)
    atomic.write_text(json_path, text + "\n")
    return csv_path, json_path


def read_history(path: str | Path) -> list[EpochRecord]:
    """Read a history back from its CSV or JSON file."""
    path = Path(path)
    if path.suffix == ".json":
        rows = json.loads(path.read_text())["history"]
    else:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    return [_record(row) for row in rows]


def read_history_meta(path: str | Path) -> dict[str, Any]:
    """The JSON document's metadata (everything but the rows)."""
    doc = json.loads(Path(path).read_text())
    doc.pop("history", None)
    return doc


def _record(row: Mapping[str, Any]) -> EpochRecord:
    values = {}
    for f in fields(EpochRecord):
        kind = int if f.name == "epoch" else float
        values[f.name] = kind(row[f.name])
    return EpochRecord(**values)
