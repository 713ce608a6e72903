"""High-level API: ``load_model(path)`` and ``Model.transcribe(path_or_array)``.

>>> import asr                                          # doctest: +SKIP
>>> model = asr.load_model("runs/digits/model.pt")      # doctest: +SKIP
>>> model.transcribe("my_digits.wav").text              # doctest: +SKIP
'three one four'
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from asr.audio import load_audio
from asr.checkpoint import load_checkpoint
from asr.config import DecodeConfig
from asr.decode import BeamOptions, beam_search, greedy_search
from asr.decode.lm import load_lm


@dataclass
class Transcript:
    text: str  # the best hypothesis
    tokens: list[int] = field(default_factory=list)  # its token ids
    score: float = 0.0  # decoder score (log domain)
    nbest: list[tuple[str, float]] = field(default_factory=list)  # (text, score) alternatives
    duration: float = 0.0  # seconds of audio
    words: list[dict] = field(default_factory=list)  # [{"word", "start", "end"}] when requested


class Model:
    """A loaded checkpoint ready to transcribe: frontend, acoustic model, tokenizer, decoder."""

    def __init__(self, path: str | Path, device: str = "cpu", decode: DecodeConfig | None = None):
        self.path = Path(path)
        self.device = torch.device(device)
        self.config, self.tokenizer, self.net, self.checkpoint = load_checkpoint(path, self.device)
        self.sample_rate = self.config.feature.sample_rate
        self.decode_cfg = decode or self.config.decode
        self._lm = None
        self._lm_path = None
        self._lexicon = None

    def with_decoding(self, **overrides) -> Model:
        """Change decoding options (``method``, ``beam_size``, ``lm_path``...) in place."""
        self.decode_cfg = dataclasses.replace(self.decode_cfg, **overrides)
        return self

    def _resources(self):
        d = self.decode_cfg
        if d.lm_path and self._lm_path != d.lm_path:
            self._lm, self._lm_path = load_lm(d.lm_path), d.lm_path
        if d.lexicon and self._lexicon is None:
            self._lexicon = {w.split()[0] for w in Path(d.lexicon).read_text().splitlines() if w.strip()}
        return (self._lm if d.lm_path else None), (self._lexicon if d.lexicon else None)

    @torch.no_grad()
    def log_probs(self, wavs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch of 1-D waveforms -> (B, T, V) log-probs on CPU and (B,) lengths."""
        lens = torch.tensor([w.size for w in wavs])
        batch = torch.zeros(len(wavs), int(lens.max()))
        for i, w in enumerate(wavs):
            batch[i, : w.size] = torch.from_numpy(w)
        lp, out_lens = self.net(batch.to(self.device), lens.to(self.device))
        return lp.float().cpu(), out_lens.cpu()

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[Transcript]:
        d = self.decode_cfg
        if d.method == "greedy" and not d.lm_path:
            return [Transcript(self.tokenizer.decode(ids), ids) for ids in greedy_search(log_probs, lengths)]
        if d.method not in ("greedy", "beam"):
            raise ValueError(f"decode.method must be greedy or beam, got {d.method!r}")
        lm, lexicon = self._resources()
        opts = BeamOptions(d.beam_size, d.token_topk, d.token_min_logp, d.lm_weight, d.word_bonus, d.nbest)
        out = []
        for hyps in beam_search(log_probs, lengths, opts, self.tokenizer.token_strings(), lm, lexicon):
            texts = [(self.tokenizer.decode(h.tokens), h.score) for h in hyps]
            out.append(Transcript(texts[0][0], hyps[0].tokens, hyps[0].score, texts))
        return out

    def transcribe(self, audio: str | Path | np.ndarray, sample_rate: int | None = None) -> Transcript:
        """Transcribe one file (any format soundfile reads) or a float array.

        Args:
            audio: a path, or a 1-D float array.
            sample_rate: the array's rate (default: the model's rate).
        """
        if isinstance(audio, np.ndarray):
            wav = audio.astype(np.float32)
            if wav.ndim > 1:
                wav = wav.mean(axis=-1)
            if sample_rate and sample_rate != self.sample_rate:
                from asr.audio import resample

                wav = resample(wav, sample_rate, self.sample_rate)
        else:
            wav = load_audio(audio, self.sample_rate)
        return self.transcribe_batch([wav])[0]

    def transcribe_batch(self, wavs: list[np.ndarray]) -> list[Transcript]:
        lp, lens = self.log_probs(wavs)
        out = self.decode(lp, lens)
        for t, w in zip(out, wavs):
            t.duration = w.size / self.sample_rate
        return out


def load_model(path: str | Path, device: str = "cpu") -> Model:
    """Load a checkpoint written by ``asr train`` (it carries its frontend and tokenizer)."""
    return Model(path, device)
