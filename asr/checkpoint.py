"""Self-describing checkpoints: one file holds config, tokenizer, frontend, weights and run state.

Written atomically (temp file in the same folder, fsync, rename) so a kill during
the write leaves the previous file intact. Read with ``weights_only=True``: a
checkpoint can never run code. The zip members' CRC-32s are checked before loading, so
a damaged copy is an error instead of a silently wrong model.
"""

from __future__ import annotations

import ast
import dataclasses
import os
import pickle
import random
import shutil
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch

from asr.config import Config, from_dict, to_dict
from asr.errors import CheckpointError, TrainingError
from asr.features import Frontend
from asr.model import ASRModel, CTCModel
from asr.text import Tokenizer, tokenizer_from_dict

FORMAT_VERSION = 1


def atomic_torch_save(obj: dict, path: str | Path) -> None:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    tmp = ""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        where = f" ({e.filename})" if e.filename and e.filename != tmp else ""
        raise CheckpointError(f"cannot write checkpoint {path}: {e.strerror or e}{where}") from None
    except BaseException:
        if tmp:
            Path(tmp).unlink(missing_ok=True)
        raise
    # Temp files of a process killed mid-write (SIGKILL, power loss) are never loaded; remove them.
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def get_rng_state() -> dict:
    """Python, NumPy, torch (and CUDA) RNG states as tensors and plain strings.

    Plain data only, so a checkpoint stays loadable with ``weights_only=True``.
    """
    np_state = np.random.get_state()
    st = {
        "python": repr(random.getstate()),
        "numpy": repr([np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])]),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def set_rng_state(st: dict) -> None:
    """Restore what ``get_rng_state`` saved."""

    def tuples(x):
        return tuple(tuples(i) for i in x) if isinstance(x, (list, tuple)) else x

    random.setstate(tuples(ast.literal_eval(st["python"])))
    saved = ast.literal_eval(st["numpy"])
    if len(saved) == 4:
        keys, pos, has_gauss, gauss = saved
    else:  # the first checkpoints held the key array only
        keys, pos, has_gauss, gauss = saved, 624, 0, 0.0
    np.random.set_state(("MT19937", np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(st["cuda"])


def build_model(cfg: Config, vocab_size: int) -> ASRModel:
    """A fresh (untrained) frontend + CTC model for ``cfg``."""
    frontend = Frontend(cfg.feature)
    return ASRModel(frontend, CTCModel(cfg.model, frontend.dim, vocab_size))


def save_checkpoint(
    path: str | Path,
    cfg: Config,
    tokenizer: Tokenizer,
    model: ASRModel,
    optimizer=None,
    scheduler=None,
    state: dict | None = None,
) -> None:
    """Write everything needed to transcribe (and to resume training) into one file."""
    obj = {
        "format_version": FORMAT_VERSION,
        "config": to_dict(cfg),
        "tokenizer": tokenizer.to_dict(),
        "frontend": model.frontend.state_dict(),
        "model": model.ctc.state_dict(),
        "optimizer": optimizer.state_dict() if optimizer is not None else None,
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "state": state or {},
    }
    atomic_torch_save(obj, path)


def _failed_crc(path: Path) -> str | None:
    """What is damaged, when a zip member's CRC-32 does not match (torch.load does not check).

    Reading the file once more costs ~10 ms for 20 MB; a flipped bit in the weights would
    otherwise load silently as a wrong model. Returns None when every member checks out.
    """
    try:
        if not zipfile.is_zipfile(path):
            return None  # not a zip at all: torch.load says what is wrong
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.CRC == 0 and info.file_size:  # written with torch's CRC option off
                    continue
                with z.open(info) as f:
                    while f.read(1 << 20):
                        pass
    except (zipfile.BadZipFile, OSError, EOFError, RuntimeError, ValueError) as e:
        return str(e).splitlines()[0] if str(e) else type(e).__name__
    return None


def read_checkpoint(path: str | Path) -> dict:
    """Load the raw checkpoint dict safely, with a clear error for every way it can be bad."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not zipfile.is_zipfile(path):  # torch.load would run the legacy unpickler on it and fail anyhow
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): not a zip "
                              f"archive as torch.save writes; give a .pt written by `asr train`")
    bad = _failed_crc(path)
    if bad:
        raise CheckpointError(f"{path}: corrupt checkpoint ({bad}): a damaged copy or disk? "
                              "Copy it again or use an earlier checkpoint")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(
            f"{path}: refused to load: the file holds objects other than tensors and plain data "
            f"(it may be unsafe or not an asr checkpoint): {str(e).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, IndexError) as e:
        raise CheckpointError(f"{path}: not a readable checkpoint (truncated or corrupt?): {str(e).splitlines()[0] if str(e) else type(e).__name__}") from None
    if not isinstance(obj, dict) or "format_version" not in obj:
        raise CheckpointError(f"{path}: not an asr checkpoint (no format_version)")
    if obj["format_version"] > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format version {obj['format_version']} is newer than this asr "
            f"understands ({FORMAT_VERSION}); upgrade asr"
        )
    return obj


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> tuple[Config, Tokenizer, ASRModel, dict]:
    """Rebuild a model from a checkpoint file alone.

    Args:
        path: checkpoint written by ``save_checkpoint`` (or ``average_checkpoints``).
        device: where to put the model.
    Returns:
        (config, tokenizer, model in eval mode, raw checkpoint dict)
    """
    obj = read_checkpoint(path)
    try:
        cfg = from_dict(Config, obj["config"], where=f"{path} config")
        tokenizer = tokenizer_from_dict(obj["tokenizer"])
        model = build_model(cfg, len(tokenizer))
        model.frontend.load_state_dict(obj["frontend"])
        model.ctc.load_state_dict(obj["model"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: checkpoint contents do not match its config: {e}") from None
    model.to(device).eval()
    return cfg, tokenizer, model, obj


def best_checkpoints(run_dir: str | Path, n: int = 0) -> list[Path]:
    """The best-by-dev-error-rate checkpoints kept in a run folder (WER; PER for a phone model), best first.

    Args:
        run_dir: a run folder (or its ``checkpoints`` folder).
        n: at most this many; 0 means all that are kept.
    Returns:
        checkpoint paths, in the order recorded in ``last.pt`` (best first).
    """
    d = Path(run_dir)
    if (d / "checkpoints").is_dir():
        d = d / "checkpoints"
    if not (d / "last.pt").is_file():
        raise CheckpointError(f"{run_dir}: not a run folder (no checkpoints/last.pt)")
    best = read_checkpoint(d / "last.pt")["state"].get("train_state", {}).get("best", [])
    paths = [d / Path(p).name for _, p in best if (d / Path(p).name).is_file()]
    if not paths:
        raise CheckpointError(f"{run_dir}: no best-by-dev-error-rate checkpoints (was there a dev set?)")
    return paths[:n] if n > 0 else paths


def average_checkpoints(paths: list[str | Path], out: str | Path) -> None:
    """Average the model weights of checkpoints of one model config into ``out``.

    Floating-point weights are averaged in float64; everything else (config, tokenizer,
    frontend with its CMVN statistics) is taken from the first checkpoint. The result
    holds no optimizer state: it is for inference (or fine-tuning from scratch state).

    Args:
        paths: two or more checkpoint files (one is copied as is).
        out: the averaged checkpoint, written atomically.
    """
    if not paths:
        raise CheckpointError("no checkpoints to average")
    objs = [read_checkpoint(p) for p in paths]
    first = objs[0]
    for p, o in zip(paths[1:], objs[1:]):
        if o["config"].get("model") != first["config"].get("model") or o["tokenizer"] != first["tokenizer"]:
            raise CheckpointError(f"{p}: model config or tokenizer differs from {paths[0]}; "
                                  "only checkpoints of the same run can be averaged")
        if set(o["model"]) != set(first["model"]) or any(
                o["model"][k].shape != v.shape for k, v in first["model"].items()):
            raise CheckpointError(f"{p}: weight names or shapes differ from {paths[0]}")
    avg = {}
    for key, val in first["model"].items():
        if val.is_floating_point():
            avg[key] = sum(o["model"][key].double() for o in objs).div(len(objs)).to(val.dtype)
        else:
            avg[key] = val
    result = dict(first)
    result["model"] = avg
    result["optimizer"] = None
    result["scheduler"] = None
    state = {k: v for k, v in first.get("state", {}).items() if k not in ("rng", "scaler")}
    result["state"] = dict(state, averaged_from=[str(p) for p in paths])
    atomic_torch_save(result, out)


def retain_checkpoints(ckpt_dir: str | Path, epoch: int, wer: float | None, best: list,
                       keep_best: int, keep_last: int) -> list:
    """The retention policy, applied once ``<ckpt_dir>/epoch-<epoch>.pt`` has been written.

    The epoch file is copied to ``best-epoch-<epoch>.pt`` and ranked by dev error rate (WER; PER
    for a phone model; a tie goes to the earlier epoch); best files beyond ``keep_best`` and
    epoch files beyond the last ``keep_last`` are deleted (0 keeps none of that kind).

    Args:
        ckpt_dir: the run's checkpoints folder.
        epoch: the (1-based) epoch just saved.
        wer: its dev error rate, or None without a dev set (then it cannot rank among the best).
        best: ``[[wer, path], ...]`` kept so far, best first (TrainState.best).
    Returns:
        the new ``best`` list, best first.
    """
    d = Path(ckpt_dir)
    best = [list(b) for b in best]
    if wer is not None and keep_best > 0:
        best_path = d / f"best-epoch-{epoch}.pt"
        shutil.copyfile(d / f"epoch-{epoch}.pt", best_path)
        best.append([wer, str(best_path)])
        best.sort(key=lambda b: b[0])  # stable: the earlier epoch wins a tie
        for _, p in best[keep_best:]:
            Path(p).unlink(missing_ok=True)
        best = best[:keep_best]
    epochs = sorted(d.glob("epoch-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
    for p in epochs[:-keep_last] if keep_last > 0 else epochs:
        p.unlink(missing_ok=True)
    return best


def write_final_model(ckpt_dir: str | Path, best: list, average: int, out: str | Path,
                      metric: str = "WER") -> str:
    """Write the run's final model (``model.pt``): the average of the ``average`` best checkpoints
    when there are two or more (and ``average`` > 1), else the best one, else ``last.pt`` (no dev set).

    Args:
        best: ``[[error rate, path], ...]`` best first, as returned by :func:`retain_checkpoints`.
        metric: the name of that error rate, for the description ("WER", or "PER" for a phone model).
    Returns:
        what ``out`` is, in words (for the log).
    """
    kept = [(w, p) for w, p in best if Path(p).is_file()]
    if average > 1 and len(kept) > 1:
        average_checkpoints([p for _, p in kept[:average]], out)
        return f"average of the {min(len(kept), average)} best checkpoints by dev {metric}"
    if kept:
        shutil.copyfile(kept[0][1], out)
        return f"best checkpoint {kept[0][1]} (dev {metric} {100 * kept[0][0]:.2f}%)"
    shutil.copyfile(Path(ckpt_dir) / "last.pt", out)
    return "last checkpoint (no dev set, so no best)"


# ---------------------------------------------------------------- a training run's checkpoints


def save_training(path: str | Path, cfg: Config, tokenizer: Tokenizer, model: ASRModel, optimizer,
                  scheduler, scaler, train_state: dict) -> None:
    """A resumable training checkpoint: the model plus optimizer, LR schedule, AMP scaler, the
    run state (``asdict(TrainState)``) and every RNG state, so a resumed run repeats the
    uninterrupted one step for step."""
    save_checkpoint(path, cfg, tokenizer, model, optimizer, scheduler, {
        "train_state": train_state,
        "rng": get_rng_state(),
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
    })


def init_units(obj: dict, path: str | Path, kind: str) -> dict:
    """Fine-tuning: the units (tokenizer dict) of checkpoint ``obj`` read from ``path``, which the
    new run keeps (its lexicon and vocabulary fit the weights); ``kind`` is the config's
    ``tokenizer.kind``.

    Raises:
        TrainingError: the checkpoint's units are of another kind than the config asks for.
    """
    theirs = obj["tokenizer"].get("kind")
    if theirs != kind:
        raise TrainingError(f"train.init_from={path}: that model outputs {theirs} units but this config has "
                            f"tokenizer.kind={kind}; fine-tuning keeps the model's units: give "
                            f"tokenizer.kind={theirs}, or train from scratch")
    return obj["tokenizer"]


def init_weights(obj: dict, path: str | Path, model: ASRModel) -> None:
    """Fine-tuning: copy a checkpoint's frontend (with its CMVN statistics) and model weights
    (``obj``, read from ``path``) into a fresh model; its optimizer and schedule are not used.

    Raises:
        TrainingError: its model is not the one this config builds (layers, sizes, units), or its
            features were computed otherwise (any ``feature.*`` setting differs: the weights would
            load, and silently see other features).
    """
    theirs_f = (obj.get("config") or {}).get("feature") or {}
    fields = dataclasses.fields(model.frontend.cfg)
    ours_f = dataclasses.asdict(model.frontend.cfg)
    diff = [(f.name, theirs_f.get(f.name, f.default), ours_f[f.name]) for f in fields
            if theirs_f.get(f.name, f.default) != ours_f[f.name]]
    if diff:
        raise TrainingError(f"train.init_from={path}: its features were made with "
                            f"{', '.join(f'feature.{k}={a}' for k, a, _ in diff)}, this config has "
                            f"{', '.join(f'feature.{k}={b}' for k, _, b in diff)}; fine-tuning needs the same "
                            f"features: give {' '.join(f'feature.{k}={a}' for k, a, _ in diff)}")
    try:
        model.frontend.load_state_dict(obj["frontend"])
        model.ctc.load_state_dict(obj["model"])
    except (RuntimeError, ValueError, KeyError) as e:
        theirs = (obj.get("config") or {}).get("model")
        raise TrainingError(f"train.init_from={path}: its model does not fit this config "
                            f"({str(e).splitlines()[0]}); it was trained with model: {theirs}; give "
                            "the same model.* and feature.* settings") from None


def restore_training(obj: dict, path: str | Path, model: ASRModel, optimizer, scheduler, scaler) -> dict:
    """Load a :func:`save_training` checkpoint (already read: ``obj``) into the run's objects and
    restore the RNG states.

    Returns:
        the saved run state (``asdict(TrainState)``).
    Raises:
        TrainingError: the checkpoint does not fit this config's model or optimizer.
    """
    try:
        model.frontend.load_state_dict(obj["frontend"])
        model.ctc.load_state_dict(obj["model"])
        optimizer.load_state_dict(obj["optimizer"])
    except (RuntimeError, ValueError, KeyError) as e:
        raise TrainingError(f"{path} does not match this config ({str(e).splitlines()[0]}); use the "
                            "config it was trained with, --no-resume, or a new run_dir") from None
    scheduler.load_state_dict(obj["scheduler"] or {})
    st = obj["state"]
    if st.get("scaler") and scaler.is_enabled():
        scaler.load_state_dict(st["scaler"])
    set_rng_state(st["rng"])
    return st["train_state"]
