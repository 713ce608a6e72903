"""Model selection over several dev sets (``train.select_on``).

A model that is best on clean dev can be the worst on the audio users bring (an MP3, a phone
call). ``train.select_on`` lists the dev sets whose mean error rate ranks the epochs (best
checkpoints, their average, early stopping, reduce-on-plateau): ``dev`` is the clean
``data.dev_manifest``; any other entry is a manifest, e.g. a degraded copy of dev made by
``asr data degrade`` (``<out>/mp3_24/manifest.jsonl`` is named ``mp3_24``). The default,
``[dev]``, is the clean dev set alone, as before.

Each extra set is validated like dev after every epoch (on the same fixed subset of ids when
``train.valid_subset`` is set), costs one more dev pass, and is logged per set: metrics
``dev_<name>_wer`` / ``_cer`` / ``_loss`` (``_per`` for a phone model) and the mean as
``dev_select_wer`` (``dev_select_per``).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from asr.config import Config
from asr.data import filter_by_duration, read_manifest
from asr.errors import ConfigError, ManifestError
from asr.train_data import filter_trainable, make_loader
from asr.validation import dev_score, dev_subset, validate

log = logging.getLogger("asr.train")

RESERVED = {"full", "select", "subset"}  # names the dev metrics already use


def set_name(path: str, taken: set[str]) -> str:
    """A short metric-safe name for a manifest: its folder for ``.../mp3_24/manifest.jsonl``,
    else its file stem; made unique against ``taken``.

    >>> set_name("exp/data/degraded/mp3_24/manifest.jsonl", {"dev"})
    'mp3_24'
    >>> set_name("data/noisy dev.jsonl", {"noisy_dev"})
    'noisy_dev_2'
    """
    p = Path(path)
    stem = p.parent.name if p.stem == "manifest" and p.parent.name else p.stem
    base = re.sub(r"[^A-Za-z0-9_]+", "_", stem).strip("_").lower() or "set"
    if base in RESERVED or base == "dev":
        base = f"{base}_set"
    name, i = base, 2
    while name in taken:
        name, i = f"{base}_{i}", i + 1
    return name


class Selection:
    """The dev sets that rank epochs, and their mean score.

    ``validate(model, device, amp)`` scores the extra sets (rank 0 runs it); ``score(metrics)``
    turns the epoch's dev metrics (clean dev's and the extra sets') into the ranking number.
    """

    def __init__(self, cfg: Config, tokenizer, pin: bool = False, cache=None):
        """Read, filter and load the extra manifests of ``train.select_on``.

        Raises:
            ConfigError: ``dev`` listed without ``data.dev_manifest``, or a manifest that
                does not exist or holds no usable utterance.
        """
        self.cfg, self.tokenizer = cfg, tokenizer
        self.uses_dev = "dev" in cfg.train.select_on
        if self.uses_dev and not cfg.data.dev_manifest:
            if cfg.train.select_on != ("dev",):
                raise ConfigError("train.select_on lists dev but data.dev_manifest is not set; set it or "
                                  "drop dev from train.select_on")
            self.uses_dev = False  # the default with no dev set: nothing ranks epochs, as before
        self.loaders: dict[str, object] = {}
        taken = {"dev"}
        for path in cfg.train.select_on:
            if path == "dev":
                continue
            name = set_name(path, taken)
            taken.add(name)
            try:
                utts = read_manifest(path, strict=False)
            except ManifestError as e:
                raise ConfigError(f"train.select_on: {e}; build it first (e.g. asr data degrade DEV "
                                  "--kind mp3:24 -o OUT) or fix the path") from None
            if hasattr(tokenizer, "prepare"):  # phones: G2P for the set's words, at once, logged
                tokenizer.prepare([u.text for u in utts], name)
            utts = filter_trainable(filter_by_duration(utts, cfg.data.min_duration, cfg.data.max_duration),
                                    tokenizer, cfg, name)
            if not utts:
                raise ConfigError(f"train.select_on: {path} holds no usable utterance")
            utts = dev_subset(utts, cfg.train.valid_subset)
            self.loaders[name] = make_loader(utts, tokenizer, cfg, False, pin=pin, cache=cache)
            log.info("selection set %s: %d utterances from %s", name, len(utts), path)

    @property
    def names(self) -> list[str]:
        return (["dev"] if self.uses_dev else []) + list(self.loaders)

    def validate(self, model, device, amp) -> dict:
        """Dev metrics of each extra set, keyed ``dev_<name>_<metric>`` ({} when there is none)."""
        out = {}
        for name, loader in self.loaders.items():
            m = validate(model, loader, self.tokenizer, device, self.cfg, amp)
            out.update({f"dev_{name}_{k[4:]}": v for k, v in m.items()})
        return out

    def score(self, metrics: dict) -> tuple[str, float | None]:
        """The epoch's ranking error rate: clean dev's (the default), or the mean over the sets,
        which is then also logged per set and stored in ``metrics`` as ``dev_select_<wer|per>``.

        Returns:
            ("WER" or "PER" and the sets it averages, value), value None without any dev set.
        """
        if self.names in ([], ["dev"]):
            return dev_score(metrics)
        scores = {}
        for name in self.names:
            prefix = "dev_" if name == "dev" else f"dev_{name}_"
            own = {k.replace(prefix, "dev_", 1): v for k, v in metrics.items() if k.startswith(prefix)}
            unit, value = dev_score(own)
            if value is None or own.get("dev_utts") == 0:
                # a set with no usable utterance this epoch (its error rate would read 0 %)
                log.warning("selection set %s: no utterance could be scored this epoch (see the warnings "
                            "above); clean dev alone ranks this epoch", name)
                return dev_score(metrics)
            scores[name] = value
        mean = sum(scores.values()) / len(scores)
        metrics[f"dev_select_{unit.lower()}"] = mean
        log.info("selection %s %.2f%%: mean of %s", unit, 100 * mean,
                 ", ".join(f"{n} {100 * v:.2f}%" for n, v in scores.items()))
        return f"{unit} (mean of {', '.join(scores)})", mean
