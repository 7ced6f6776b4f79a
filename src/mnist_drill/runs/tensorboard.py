"""A run's TensorBoard events: its metrics.csv as scalars, its config as hparams, so `tensorboard --logdir runs`
overlays every run (each run folder is one TensorBoard run, named by its path under the log dir).

Needs the `tensorboard` extra; without the package a run writes no events and says nothing. The event file sits
in the run folder itself, beside metrics.csv, whose rows it mirrors as written there (6 significant digits): per
epoch (the step) the scalars train_loss, train_acc, test_loss, test_acc and lr, and as the run ends best_test_acc
and final_test_acc, to compare its hparams by (the resolved config's flattened keys, but the descriptive change,
reason and expect). A --resume writes the stream afresh from the rows finished so far, so no epoch appears twice
and none is missing. Writing events is best effort: a failure stops the events, never the run (metrics.csv is
the record).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

from ..config.schema import DESCRIPTIVE_KEYS, Config, flatten, to_dict, yaml_value
from ..reporting.analysis import Outcome
from ..storage.files import as_written

SCALARS = ("train_loss", "train_acc", "test_loss", "test_acc", "lr")  # metrics.csv's columns, its spelling
METRICS = ("best_test_acc", "final_test_acc")  # the hparams' metrics, analysis.Outcome's fields
EVENTS_GLOB = "events.out.tfevents.*"


def hparams(cfg: Config) -> dict[str, float | int | str | bool]:
    """The config's flattened keys that say what trained (not name, change, reason, expect's prose), values
    TensorBoard can show: lists as their YAML text; unset (null) keys left out, as TensorBoard leaves them."""
    flat = flatten(to_dict(cfg))
    return {
        key: yaml_value(value) if isinstance(value, list) else value
        for key, value in flat.items()
        if value is not None and (key == "name" or key not in DESCRIPTIVE_KEYS)
    }


class Board:
    """The run's event writer; every method does nothing once writing failed or without the package."""

    def __init__(self, writer=None):
        self._writer = writer

    def epoch(self, row: dict) -> None:
        """One finished epoch's metrics.csv row, flushed so a TensorBoard watching the run shows it now."""

        def write(writer) -> None:
            for tag in SCALARS:
                writer.add_scalar(tag, as_written(row[tag]), row["epoch"])
            writer.flush()

        self._write(write)

    def close(self, result: Outcome | None) -> None:
        """The hparams' metrics (when an epoch finished), then the file closed."""

        def write(writer) -> None:
            if result is not None:
                for metric in METRICS:
                    writer.add_scalar(metric, as_written(getattr(result, metric)), result.epochs)
            writer.close()

        self._write(write)
        self._writer = None

    def _write(self, call) -> None:
        if self._writer is None:
            return
        try:
            call(self._writer)
        except OSError:  # a full disk, a lost folder: metrics.csv reports it, the events just stop
            with contextlib.suppress(OSError):
                self._writer.close()
            self._writer = None


def open_board(run_dir: Path, cfg: Config, rows: list[dict]) -> Board:
    """The run's Board, its hparams written and the epochs in `rows` (those finished before a --resume) replayed
    into a new event file in place of the old ones; a Board that writes nothing without the package."""
    try:
        from torch.utils.tensorboard import SummaryWriter
        from torch.utils.tensorboard.summary import hparams as hparams_summary
    except ImportError:  # the tensorboard extra is not installed
        return Board()
    try:
        for old in run_dir.glob(EVENTS_GLOB):
            old.unlink()
        writer = SummaryWriter(log_dir=str(run_dir))
        # The session's hparams only: TensorBoard then builds the HParams table from every run's (the union of
        # their keys, their scalars as metrics); a run's own experiment summary would be the table of them all.
        writer.file_writer.add_summary(hparams_summary(hparams(cfg), dict.fromkeys(METRICS, 0.0))[1])
    except OSError:
        return Board()
    board = Board(writer)
    for row in rows:
        board.epoch(row)
    return board
