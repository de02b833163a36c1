"""What a run leaves to read: metrics.csv/jsonl, TensorBoard events, progress.png, progress bars.

One row per epoch (``epoch``, ``step``, learning rates, ``train_loss``, ``epoch_seconds`` and,
after a validation, its metrics) goes to ``metrics.jsonl`` (appended) and ``metrics.csv``
(rewritten, so columns that appear later, like validation metrics, get a header). Only rank 0
records; other ranks get a :class:`RunRecords` that does nothing.

On ``--resume`` the rows of epochs after the checkpoint are dropped and TensorBoard purges
its events past the checkpoint's step, so the files read as if the run had never stopped (a
last line cut short by a full disk is dropped too).

A file the operating system refuses (disk full, read-only folder) raises an ``OSError`` whose
``filename`` is that file, never a temporary sibling or nothing: the CLI prints it as one line
naming the file (exit 1).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress

from volseg.io.atomic import atomic_path, errors_named
from volseg.progress import bars_wanted, new_progress

console = Console(stderr=True, highlight=False, soft_wrap=True)


class RunRecords:
    """Metric files, TensorBoard and the progress plot of one run folder.

    Args:
        run_dir: the run folder.
        enabled: False on ranks other than 0 (every method is then a no-op).
        resume_epoch: when resuming, rows of epochs after this one are dropped.
        resume_step: when resuming, TensorBoard events after this step are purged.
        score_key: the validation metric drawn on the plot's right panel first.
    """

    def __init__(
        self,
        run_dir: Path,
        *,
        enabled: bool = True,
        resume_epoch: int | None = None,
        resume_step: int | None = None,
        score_key: str = "dice_mean",
    ) -> None:
        self.run_dir, self.enabled, self.score_key = Path(run_dir), enabled, score_key
        self.rows: list[dict[str, Any]] = []
        self._writer = None
        if not enabled:
            return
        jsonl = self.run_dir / "metrics.jsonl"
        if resume_epoch is not None and jsonl.is_file():
            rows = _json_rows(jsonl.read_text(encoding="utf-8"))
            self.rows = [r for r in rows if r.get("epoch", 0) <= resume_epoch]
            self._rewrite_jsonl()
            self._write_csv()
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # tensorboard is a dependency, but keep training without it
            console.print("tensorboard is not installed; no TensorBoard events are written")
        else:
            self._writer = SummaryWriter(str(self.run_dir / "tensorboard"), purge_step=resume_step)

    def log(self, row: Mapping[str, Any]) -> None:
        """Record one epoch's row in every sink, and redraw the plot after a validation."""
        if not self.enabled:
            return
        row = {k: _plain(v) for k, v in row.items()}
        self.rows.append(row)
        jsonl = self.run_dir / "metrics.jsonl"
        with errors_named(jsonl), jsonl.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
        self._write_csv()
        if self._writer is not None:
            step = int(row.get("step", 0))
            for key, value in row.items():
                if key not in ("epoch", "step") and isinstance(value, (int, float)):
                    self._writer.add_scalar(key, value, step)
            self._writer.flush()
        if any(k.startswith(("dice", "auc")) for k in row):
            self.plot()

    def plot(self) -> None:
        """Write ``progress.png``: training loss and validation curves per epoch, the best
        epoch marked; legends sit below the axes so that no curve is hidden."""
        if not self.enabled or not self.rows:
            return
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.4))
        train = [r for r in self.rows if "train_loss" in r]
        left.plot([r["epoch"] for r in train], [r["train_loss"] for r in train], label="train")
        val = [r for r in self.rows if "val_loss" in r]
        if val:
            left.plot([r["epoch"] for r in val], [r["val_loss"] for r in val], "o-", label="val")
        left.set(xlabel="epoch", ylabel="loss", title="loss")
        keys = [self.score_key] + sorted(
            {k for r in self.rows for k in r if k.startswith("dice/")}
            | {k for r in self.rows for k in r if k in ("balanced_accuracy", "accuracy")}
        )
        for key in keys:
            points = [(r["epoch"], r[key]) for r in self.rows if _finite(r.get(key))]
            if points:
                style = "o-" if key == self.score_key else ".--"
                right.plot(*zip(*points, strict=True), style, label=key)
        scored = [r for r in self.rows if _finite(r.get(self.score_key))]
        if scored:  # max keeps the first of equal scores, as best.pt does
            best = max(scored, key=lambda r: r[self.score_key])
            for ax in (left, right):
                ax.axvline(best["epoch"], color="grey", linestyle=":", label="best epoch")
            right.plot([best["epoch"]], [best[self.score_key]], "*", color="crimson", markersize=12)
        right.set(xlabel="epoch", ylabel="validation score (0-1)", title="validation")
        right.set_ylim(-0.02, 1.02)  # curves at 0 stay visible above the axis
        for ax in (left, right):
            if ax.lines:
                ax.legend(
                    fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncols=3
                )
        fig.tight_layout()
        png = self.run_dir / "progress.png"
        with errors_named(png), atomic_path(png) as tmp:
            fig.savefig(tmp, format="png", dpi=90, bbox_inches="tight")
        plt.close(fig)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _write_csv(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [k for k in row if k not in columns]
        path = self.run_dir / "metrics.csv"
        with errors_named(path), atomic_path(path) as tmp:
            with tmp.open("w", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=columns)
                writer.writeheader()
                writer.writerows(self.rows)

    def _rewrite_jsonl(self) -> None:
        path = self.run_dir / "metrics.jsonl"
        with errors_named(path), atomic_path(path) as tmp:
            tmp.write_text("".join(json.dumps(r) + "\n" for r in self.rows), encoding="utf-8")


@contextmanager
def epoch_progress(enabled: bool) -> Iterator[Progress | None]:
    """A rich progress display (epoch, steps, loss, ETA), or None when disabled or when no one
    would see it (:func:`volseg.progress.bars_wanted`: stderr not a terminal, pytest,
    ``VOLSEG_NO_PROGRESS=1``)."""
    if not enabled or not bars_wanted():
        yield None
        return
    progress = new_progress(fields=("loss {task.fields[loss]}",), console=console)
    with progress:
        yield progress


def _json_rows(text: str) -> list[dict[str, Any]]:
    """The rows of ``metrics.jsonl``; a line that does not parse (cut short when the disk
    filled up) is left out."""
    rows = []
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _plain(value: Any) -> Any:
    """JSON-able numbers (numpy and torch scalars become floats; NaN stays NaN)."""
    if hasattr(value, "item"):
        value = value.item()
    return value


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
