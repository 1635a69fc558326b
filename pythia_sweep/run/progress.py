"""What a sweep draws on the driver's terminal: the checkpoints bar (a line per checkpoint off a terminal), each
worker's weight downloads in bytes, and nothing of transformers' own per-load bars."""

from __future__ import annotations

import sys

from ray.experimental import tqdm_ray
from tqdm import tqdm


class DownloadBar(tqdm_ray.tqdm):
    """A weight file's download in a worker, in bytes, drawn on the driver's terminal as `<revision> <file>`.

    huggingface_hub draws its byte bars only where stderr is a terminal, and a Ray worker's stderr is a log
    file: its downloads would show nothing. Ray forwards a worker's output to the driver line by line, so a
    plain tqdm bar (one line rewritten with carriage returns) would arrive only once finished; Ray's
    distributed tqdm sends each update as a line of its own and the driver draws the bar, live. Its rows
    start below the first (`position=1`), which the driver's checkpoints bar holds.

    huggingface_hub creates it as a `tqdm_class` (`DownloadBar.named(label)`, hub.fetch.fetch's `progress`)
    and drives it as a plain HTTP download does (a context manager, `update(n)` per chunk) or a Xet one does
    (`update(n)` per bytes written, `update_transfer`, the postfix setters, `total`, `close`).
    """

    label = ""  # the bar's name, "<revision> <file>", whatever description huggingface_hub gives it

    @classmethod
    def named(cls, label: str) -> type[DownloadBar]:
        return type(cls.__name__, (cls,), {"label": label})

    def __init__(self, *, total: int | None = None, initial: int = 0, **tqdm_kwargs):
        super().__init__(desc=self.label, total=total, unit="B", position=1)  # drawn scaled: 1.69M/1.69M [..., 48.9MB/s]
        if initial:  # a resumed download's bytes already on disk
            self.update(initial)

    def update_transfer(self, n: int = 1) -> None:
        """Bytes received (Xet: before reconstruction): drawn when written, by `update`."""

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        """huggingface_hub's rate text: the driver's bar shows its own rate."""

    set_transfer_postfix_str = set_postfix_str

    def __enter__(self) -> DownloadBar:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def checkpoints_bar(total: int, shown: bool, name_models: bool = False):
    """The checkpoints bar on a terminal; off one (a log file, `ray job submit`'s output), where a bar rewritten
    with carriage returns is one unreadable line, a line per finished checkpoint instead (naming its model too
    in a study of several)."""
    if shown and not sys.stderr.isatty():
        return LinePerCheckpoint(total, name_models)
    return CheckpointsBar(total=total, desc="checkpoints", unit="ckpt", disable=not shown)


def where_measured(record) -> str:
    """Where a record's checkpoint was measured: on its worker's node (by address), or in the driver's process."""
    worker = record.worker or {}
    if worker.get("in_process"):
        return "in this process"
    return f"on {worker['ip']}" if worker.get("ip") else "on a worker"


class CheckpointsBar(tqdm):
    """tqdm, advanced by a finished checkpoint's record."""

    def done(self, record) -> None:
        self.update(1)


class LinePerCheckpoint:
    """The part of the checkpoints bar's interface the sweep uses, printed as a line per finished checkpoint, with
    where it was measured (failures are listed by name when the sweep ends)."""

    def __init__(self, total: int, name_models: bool = False):
        self.total, self.n, self.name_models = total, 0, name_models

    def set_postfix(self, **state) -> None:  # workers, running, failed, queued: a live bar's state, not a log's
        pass

    def done(self, record) -> None:
        self.n += 1
        which = f"{record.model} {record.revision}" if self.name_models else record.revision
        print(f"checkpoints: {self.n}/{self.total} finished ({which}, {record.status}, {where_measured(record)})",
              file=sys.stderr, flush=True)  # fmt: skip

    def write(self, line: str) -> None:  # what tqdm.write does beside a live bar
        print(line, file=sys.stderr, flush=True)

    def close(self) -> None:
        pass
