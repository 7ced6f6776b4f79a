"""A run's TensorBoard events (with the `tensorboard` extra; docs/cli.md): its metrics.csv as scalars, as written
there, and its config as hparams. Best effort: a failure stops the events, never the run (metrics.csv is the record).
"""

from __future__ import annotations

import time
from pathlib import Path

from ..config.schema import DESCRIPTIVE_KEYS, Config, flatten, to_dict, yaml_value
from ..reporting.analysis import Outcome
from ..storage.files import as_written

SCALARS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr")  # metrics.csv's columns, its spelling
METRICS = ("best_test_acc", "final_test_acc")  # the hparams' metrics, analysis.Outcome's fields


def hparams(cfg: Config) -> dict[str, float | int | str | bool]:
    """The config's flattened keys that say what trained (not the descriptive prose): lists as their YAML text,
    unset (null) keys left out, as TensorBoard leaves them."""
    return {
        key: yaml_value(value) if isinstance(value, list) else value
        for key, value in flatten(to_dict(cfg)).items()
        if value is not None and (key == "name" or key not in DESCRIPTIVE_KEYS)
    }


class Board:
    """The run's event file, written in this thread (TensorBoard's own writers write from a thread of theirs, whose
    failures print a traceback); every method does nothing once writing failed or without the package."""

    def __init__(self, path: Path | None = None, tensorboard: tuple = (None, None, None)):
        self._path = path
        self._event, self._summary, self._record = tensorboard  # TensorBoard's Event, Summary and RecordWriter

    def write(self, step: int, summary=None, **event) -> None:
        """One event, appended and flushed, so a TensorBoard watching the run shows it now."""
        if self._path is None:
            return
        data = self._event(wall_time=time.time(), step=step, summary=summary, **event).SerializeToString()
        try:
            with open(self._path, "ab") as f:
                self._record(f).write(data)
        except OSError:  # a full disk, a lost folder: metrics.csv reports it, the events just stop
            self._path = None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self._path is not None:
            self.write(
                step, self._summary(value=[self._summary.Value(tag=k, simple_value=v) for k, v in values.items()])
            )

    def epoch(self, row: dict) -> None:
        self.scalars(row["epoch"], {tag: as_written(row[tag]) for tag in SCALARS})

    def close(self, result: Outcome | None) -> None:
        """The metrics to compare the hparams by, when an epoch finished."""
        if result is not None:
            self.scalars(result.epochs, {metric: as_written(getattr(result, metric)) for metric in METRICS})


def open_board(run_dir: Path, cfg: Config, rows: list[dict]) -> Board:
    """The run's Board, its hparams written and the epochs in `rows` (finished before a --resume) replayed into a
    new event file in place of the old ones: each epoch once."""
    try:
        from tensorboard.compat.proto.event_pb2 import Event
        from tensorboard.compat.proto.summary_pb2 import Summary
        from tensorboard.summary.writer.record_writer import RecordWriter
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        for old in run_dir.glob("events.out.tfevents.*"):
            old.unlink()
    except (ImportError, OSError):  # the tensorboard extra is not installed, or the old events cannot go
        return Board()
    board = Board(run_dir / f"events.out.tfevents.{int(time.time()):010d}.mnist-drill", (Event, Summary, RecordWriter))
    board.write(0, file_version="brain.Event:2")
    # The session's hparams only: TensorBoard then builds the HParams table from every run's (the union of
    # their keys, their scalars as metrics); a run's own experiment summary would be the table of them all.
    board.write(0, hparams_summary(hparams(cfg), dict.fromkeys(METRICS, 0.0))[1])
    for row in rows:
        board.epoch(row)
    return board
