"""Grapheme-to-phoneme: a tiny BiLSTM-CTC over letters, trained by ``asr`` on CMUdict.

Each letter is repeated ``upsample`` times (a word may have more phonemes than letters:
"x" -> K S), a bidirectional LSTM reads them and CTC maps the frames to phonemes; greedy
decoding gives one pronunciation. The weights file describes itself (letters, phones,
sizes), so loading needs nothing but the file. The shipped model (asr/g2p_cmudict.pt)
was trained with ``asr g2p train`` on CMUdict minus the held-out words of
:func:`is_held_out`; ``asr g2p eval`` measures it on them.
"""

from __future__ import annotations

import logging
import math
import os
import random
import time
import zlib
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

log = logging.getLogger("asr.g2p")

FORMAT = "asr-g2p-1"
PACKAGED = Path(__file__).with_name("g2p_cmudict.pt")
CACHED = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "asr" / "g2p_cmudict.pt"
LETTERS = "'abcdefghijklmnopqrstuvwxyz"


def is_held_out(word: str, percent: int = 2) -> bool:
    """The fixed ``percent`` % of words that G2P training never sees (a hash of the word)."""
    return zlib.crc32(word.encode("utf-8")) % 100 < percent


class G2PModel(nn.Module):
    """Letters (B, L) -> phone log-probs (B, L * upsample, 1 + len(phones)), CTC blank 0."""

    def __init__(self, letters: str, phones: list[str], embed: int = 48, hidden: int = 96,
                 layers: int = 2, upsample: int = 2):
        super().__init__()
        self.letters, self.phones = letters, list(phones)
        self.sizes = {"embed": embed, "hidden": hidden, "layers": layers, "upsample": upsample}
        self.index = {c: i + 2 for i, c in enumerate(letters)}  # 0 = padding, 1 = other character
        self.upsample = upsample
        self.embed = nn.Embedding(len(letters) + 2, embed, padding_idx=0)
        self.rnn = nn.LSTM(embed, hidden, num_layers=layers, bidirectional=True, batch_first=True)
        self.out = nn.Linear(2 * hidden, len(self.phones) + 1)

    def encode_words(self, words: list[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """Words -> upsampled letter ids (B, L * upsample) and lengths (B,)."""
        ids = [[self.index.get(c, 1) for c in w for _ in range(self.upsample)] for w in words]
        lens = torch.tensor([len(x) for x in ids])
        x = torch.zeros(len(ids), int(lens.max()) if ids else 0, dtype=torch.long)
        for i, row in enumerate(ids):
            x[i, : len(row)] = torch.tensor(row)
        return x, lens

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """(B, T) ids, (B,) lengths -> (B, T, 1 + P) log-probs."""
        packed = nn.utils.rnn.pack_padded_sequence(self.embed(x), lens.cpu(), batch_first=True,
                                                   enforce_sorted=False)
        y, _ = self.rnn(packed)
        y, _ = nn.utils.rnn.pad_packed_sequence(y, batch_first=True, total_length=x.shape[1])
        return self.out(y).log_softmax(-1)

    @torch.no_grad()
    def pronounce(self, words: list[str], batch_size: int = 512) -> list[tuple[str, ...]]:
        """Greedy CTC pronunciations of lower-case words (an empty word gives ())."""
        self.eval()
        result: list[tuple[str, ...]] = [()] * len(words)
        todo = [i for i, w in enumerate(words) if w]
        for s in range(0, len(todo), batch_size):
            idx = todo[s: s + batch_size]
            x, lens = self.encode_words([words[i] for i in idx])
            best = self(x, lens).argmax(-1)  # (B, T)
            for row, i in enumerate(idx):
                seq = best[row, : lens[row]].tolist()
                ph = [p for t, p in enumerate(seq) if p != 0 and (t == 0 or p != seq[t - 1])]
                result[i] = tuple(self.phones[p - 1] for p in ph)
        return result

    def to_dict(self) -> dict:
        state = {k: v.half() if v.is_floating_point() else v for k, v in self.state_dict().items()}
        return {"format": FORMAT, "letters": self.letters, "phones": self.phones, "sizes": self.sizes,
                "state_dict": state}

    @classmethod
    def from_dict(cls, d: dict) -> G2PModel:
        m = cls(d["letters"], d["phones"], **d["sizes"])
        m.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in d["state_dict"].items()})
        return m.eval()


def save_g2p(model: G2PModel, path: str | Path) -> None:
    """Write the weights (fp16) atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(model.to_dict(), tmp)
    tmp.replace(path)


def load_g2p(path: str | Path) -> G2PModel:
    """Read a G2P model written by ``asr g2p train``; ValueError naming the file when it is not one."""
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ValueError(f"G2P model {path} does not exist") from None
    except Exception as e:  # noqa: BLE001  (a corrupt or foreign file: say which)
        raise ValueError(f"{path}: not a G2P model ({e})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ValueError(f"{path}: not a G2P model written by `asr g2p train`")
    return G2PModel.from_dict(d)


def _training_pairs(lexicon: dict[str, list[tuple[str, ...]]], letters: str):
    ok = set(letters)
    return [(w, prons[0]) for w, prons in sorted(lexicon.items())
            if prons and set(w) <= ok and not is_held_out(w)]


def train_g2p(lexicon: dict[str, list[tuple[str, ...]]], minutes: float = 10.0, epochs: int = 30,
              batch_words: int = 256, lr: float = 3e-3, hidden: int = 96, layers: int = 2,
              seed: int = 0, init: G2PModel | None = None) -> G2PModel:
    """Train on the first pronunciation of every lexicon word that is not held out.

    Args:
        lexicon: word -> pronunciations (e.g. asr.phones.load_cmudict()).
        minutes: wall-clock budget; training stops after the epoch or batch that passes it.
        epochs: at most this many passes; the LR decays with a cosine over them.
        init: continue training this model (its sizes win over ``hidden``/``layers``).
    Returns:
        the trained model (eval mode).
    """
    torch.manual_seed(seed)
    rng = random.Random(seed)
    pairs = _training_pairs(lexicon, LETTERS)
    phones = sorted({p for _, pron in pairs for p in pron})
    if init is not None and (init.phones != phones or init.letters != LETTERS):
        raise ValueError("the initial G2P model has other letters or phones than this lexicon")
    pidx = {p: i + 1 for i, p in enumerate(phones)}
    model = init.train() if init is not None else G2PModel(LETTERS, phones, hidden=hidden, layers=layers)
    pairs.sort(key=lambda wp: len(wp[0]))  # batches of similar length: little padding
    batches = [pairs[i: i + batch_words] for i in range(0, len(pairs), batch_words)]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    total = epochs * len(batches)
    start = time.time()
    deadline = start + 60 * minutes

    def progress(step: int) -> float:  # the cosine follows whichever budget runs out first
        return min(1.0, max(step / total, (time.time() - start) / (60 * minutes)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * progress(s))))
    log.info("G2P: %d training words, %d phones, %d batches per epoch", len(pairs), len(phones), len(batches))
    for epoch in range(epochs):
        rng.shuffle(batches)
        model.train()
        bar = tqdm(batches, desc=f"G2P epoch {epoch + 1}", unit="batch", leave=False)
        loss_sum = n = 0
        for batch in bar:
            x, lens = model.encode_words([w for w, _ in batch])
            targets = torch.tensor([pidx[p] for _, pron in batch for p in pron])
            tlens = torch.tensor([len(pron) for _, pron in batch])
            lp = model(x, lens)  # (B, T, 1 + P)
            loss = nn.functional.ctc_loss(lp.transpose(0, 1), targets, lens, tlens, zero_infinity=True,
                                          reduction="sum") / len(batch)
            opt.zero_grad()
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), 5.0)
            opt.step()
            sched.step()
            loss_sum, n = loss_sum + loss.item(), n + 1
            bar.set_postfix(loss=f"{loss_sum / n:.3f}")
            if time.time() > deadline:
                break
        bar.close()
        if epoch == 0:
            log.info("G2P: %.2f s per batch", (time.time() - start) / n)
        log.info("G2P epoch %d: loss %.3f", epoch + 1, loss_sum / max(1, n))
        if time.time() > deadline:
            log.info("G2P: time budget of %.1f min reached after %d epochs", minutes, epoch + 1)
            break
    return model.eval()


def evaluate_g2p(model: G2PModel, lexicon: dict[str, list[tuple[str, ...]]],
                 words: list[str] | None = None) -> dict:
    """Word accuracy (the output equals one of the word's pronunciations) and phone error rate
    (against the closest pronunciation) on ``words`` (default: the held-out lexicon words)."""
    from asr.metrics import ErrorCounts, word_errors

    ok = set(model.letters)
    if words is None:
        words = [w for w in sorted(lexicon) if is_held_out(w) and set(w) <= ok]
    hyps = model.pronounce(words)
    correct, per = 0, ErrorCounts()
    for w, hyp in zip(words, hyps):
        prons = lexicon[w]
        correct += hyp in prons
        per += min((word_errors(" ".join(p), " ".join(hyp)) for p in prons), key=lambda c: c.errors)
    return {"words": len(words), "word_accuracy": correct / max(1, len(words)), "per": per.rate}
