"""Where a training run's numbers go: ``train.log`` and stderr (the logging setup),
``metrics.jsonl`` (one JSON record per update and per validation), and TensorBoard (``tb/``).

Only rank 0 writes files; other ranks log warnings to stderr. ``metrics.jsonl`` always reads
as one uninterrupted run: a fresh run starts a new file, a resumed one drops the records past
the step it resumed from (written before a crash).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from asr.validation import describe

log = logging.getLogger("asr.train")


def setup_logging(run_dir: Path, rank: int) -> None:
    """Log to <run>/train.log (rank 0) and stderr (warnings only on other ranks)."""
    root = logging.getLogger("asr")
    root.setLevel(logging.INFO)
    for h in list(root.handlers):
        root.removeHandler(h)
        h.close()
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%d %H:%M:%S")
    if rank == 0:
        fh = logging.FileHandler(run_dir / "train.log")
        fh.setFormatter(fmt)
        root.addHandler(fh)
    sh = logging.StreamHandler()
    sh.setFormatter(fmt)
    sh.setLevel(logging.INFO if rank == 0 else logging.WARNING)
    root.addHandler(sh)
    root.propagate = False




class MetricsLog:
    """Per-update and per-evaluation metrics as JSON Lines in <run>/metrics.jsonl.

    On resume, records past the resumed step (written before a crash) are dropped, so the
    file always reads as one uninterrupted run.
    """

    def __init__(self, path: Path, enabled: bool):
        self.path = path
        self.enabled = enabled

    def truncate_after(self, step: int) -> None:
        if not self.enabled or not self.path.is_file():
            return
        keep = [ln for ln in self.path.read_text().splitlines()
                if ln.strip() and json.loads(ln).get("step", 0) <= step]
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text("".join(ln + "\n" for ln in keep))
        tmp.replace(self.path)

    def write(self, record: dict) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


class RunLog:
    """The run's log, metrics file and TensorBoard writer, in one place for the training loop."""

    def __init__(self, run_dir: Path, rank: int, fresh: bool):
        """Set up logging for ``run_dir``; ``fresh``: a new run (not a resume) starts a new metrics file."""
        setup_logging(run_dir, rank)
        self.is_main = rank == 0
        self.metrics = MetricsLog(run_dir / "metrics.jsonl", self.is_main)
        if fresh and self.is_main:
            self.metrics.path.unlink(missing_ok=True)
        self.writer = None
        if self.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(run_dir / "tb"))

    def resumed_at(self, step: int) -> None:
        """Drop the metrics records written after ``step`` (the resumed checkpoint's)."""
        self.metrics.truncate_after(step)

    def update(self, record: dict, mean_loss: float, every: int) -> None:
        """One optimizer update: metrics.jsonl, TensorBoard, and a train.log line every ``every`` steps.

        Args:
            record: {"step", "epoch", "batch", "loss", "utts", "lr", "grad_norm", "audio_seconds",
                "audio_s_per_s"} of the update.
            mean_loss: the epoch's running mean loss per utterance, for the log line.
        """
        self.metrics.write(record)
        step = record["step"]
        if self.writer is not None:
            self.writer.add_scalar("train/loss", record["loss"], step)
            self.writer.add_scalar("train/lr", record["lr"], step)
            self.writer.add_scalar("train/grad_norm", record["grad_norm"], step)
            self.writer.add_scalar("train/audio_seconds_per_second", record["audio_s_per_s"], step)
        if step % every == 0:
            log.info("epoch %d step %d loss %.4f lr %.2e grad_norm %.2f %.0f audio-s/s", record["epoch"],
                     step, mean_loss, record["lr"], record["grad_norm"], record["audio_s_per_s"])

    def dev(self, metrics: dict, epoch: int, step: int) -> None:
        """Dev metrics of (1-based) ``epoch`` at ``step`` ({} without a dev set: nothing to log)."""
        if not metrics:
            return
        if any(k.startswith("dev_full_") for k in metrics):
            log.info("epoch %d step %d: full dev set: %s (%d utterances)", epoch, step,
                     describe(metrics, "dev_full_", ""), metrics["dev_full_utts"])
        else:
            log.info("epoch %d step %d: %s", epoch, step, describe(metrics))
        self.metrics.write({"step": step, "epoch": epoch, **metrics})
        if self.writer is not None:
            for k, v in metrics.items():
                if k.startswith("dev_") and not k.startswith("dev_full_"):
                    self.writer.add_scalar(f"dev/{k[4:]}", v, step)
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
