"""High-level API: ``load_model(path)`` and ``Model.transcribe(path_or_array)``.

Audio of any length is read as a stream and cut into segments at quiet points
(:mod:`asr.segment`); segments are decoded independently and their texts, word times
and n-best lists stitched together.

>>> import asr                                          # doctest: +SKIP
>>> model = asr.load_model("exp/digits/model.pt")       # doctest: +SKIP
>>> model.transcribe("my_digits.wav").text              # doctest: +SKIP
'three one four'
>>> best = model.transcribe("my_digits.wav", asr.DecodingOptions(method="beam", nbest=2))  # doctest: +SKIP
>>> best.alternatives                                   # doctest: +SKIP
[('three one four', -1.52), ('three one for', -4.87)]

Decoding options (:class:`asr.decoding.DecodingOptions`) are passed per call or fixed with
``model.with_decoding(...)``, which returns a new Model sharing the network.
"""

from __future__ import annotations

import copy
import dataclasses
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from asr.align import frame_energy_db, word_timestamps
from asr.audio import resample
from asr.config import Config, DecodeConfig
from asr.decode import beam_search, greedy_search
from asr.decode.lm import load_lm
from asr.decoding import DecoderResources, DecodingOptions, combine_nbest
from asr.errors import DeviceError
from asr.frames import frame_geometry
from asr.lexicon import decoding_lexicon
from asr.segment import SegmentOptions, iter_segments  # noqa: F401 - iter_segments: asr.serve imports it here


@dataclass
class Transcript:
    text: str  # the best hypothesis
    tokens: list[int] = field(default_factory=list)  # its token ids
    score: float = 0.0  # decoder score (log domain)
    # up to DecodingOptions.nbest distinct (text, score), best first; [0] is (text, score)
    alternatives: list[tuple[str, float]] = field(default_factory=list)
    duration: float = 0.0  # seconds of audio
    words: list[dict] = field(default_factory=list)  # [{"word", "start", "end", "confidence"}] if asked
    segments: list[dict] = field(default_factory=list)  # [{"start", "end", "text"}] of a long recording
    phones: str = ""  # phone models: the greedy phones (space-separated, no word boundaries)

    def to_dict(self) -> dict:
        """The JSON of ``asr transcribe -f json`` (without the input's name)."""
        return {"text": self.text, "duration": round(self.duration, 3), "words": self.words,
                "segments": self.segments,
                "alternatives": [{"text": t, "score": round(s, 3)} for t, s in self.alternatives]}


class Model:
    """A loaded model ready to transcribe: network (frontend + acoustic model), tokenizer, decoder.

    ``net(wavs (B, S), wav_lens (B,)) -> (log_probs (B, T, V), out_lens (B,))`` may be the
    PyTorch module of a checkpoint or an exported TorchScript/ONNX program (see asr.export).
    ``options`` are the default :class:`~asr.decoding.DecodingOptions` (the config's decode
    section); each call may pass its own, and ``with_decoding`` returns a model with others.
    """

    def __init__(self, net: Callable, config: Config, tokenizer, path: str | Path = "",
                 device: str | torch.device = "cpu", decode: DecodeConfig | None = None,
                 kind: str = "checkpoint", amp: torch.dtype | None = None):
        self.net = net
        self.amp = amp  # autocast dtype around net (bf16 on CPUs with native bf16), None = fp32
        self.config = config
        self.tokenizer = tokenizer
        self.path = Path(path)
        self.device = torch.device(device)
        self.kind = kind  # "checkpoint", "torchscript", "torchscript-int8", "onnx" or "int8"
        self.sample_rate = config.feature.sample_rate
        geometry = frame_geometry(config.feature, config.model.subsampling)
        self.frame_shift = geometry.frame_seconds  # seconds per output frame
        self.min_samples = geometry.min_samples  # shorter input is zero-padded to one output frame
        self.options = DecodingOptions.from_config(decode or config.decode)
        self.segment_opts = SegmentOptions()
        self.train_state: dict = {}  # epoch, step, best_wer... of a checkpoint
        # LMs and lexicons by file identity; shared by the models with_decoding derives
        self.resources = DecoderResources(load_lm, self._load_lexicon)

    def with_decoding(self, options: DecodingOptions | None = None, **overrides) -> Model:
        """A new Model with other default decoding options; this one is left unchanged.

        Args:
            options: the new options (default: this model's).
            overrides: fields of :class:`~asr.decoding.DecodingOptions` to change
                (``method``, ``beam_size``, ``lm_path``, ``lexicon``, ``nbest``...).

        Returns:
            a model sharing this one's network, tokenizer and loaded LMs/lexicons.

        Raises:
            ConfigError: an impossible option; LMError, LexiconError: the LM or lexicon the
            beam search needs cannot be read (checked now, not per utterance).
        """
        new = copy.copy(self)
        new.options = dataclasses.replace(options or self.options, **overrides)
        new.prepare_decoding()  # only what the beam search needs: greedy needs no lexicon
        return new

    @property
    def is_phone(self) -> bool:
        """The model predicts phones: words come from a pronunciation lexicon."""
        return getattr(self.tokenizer, "kind", "") == "phone"

    @property
    def uses_beam(self) -> bool:
        """The default options run the beam search (method beam, or greedy asked with an LM)."""
        return self.options.uses_beam

    def prepare_decoding(self, options: DecodingOptions | None = None) -> None:
        """Load the LM and lexicon ``options`` (default: the model's) need now, so that a bad
        file or a phone model without a lexicon is reported before any audio is decoded.

        Raises:
            LexiconError, LMError: the message names the file (and line) or the model.
        """
        options = options or self.options
        if options.uses_beam:
            self.resources.for_options(options, self.is_phone)

    def _load_lexicon(self, path: str):
        return decoding_lexicon(self.tokenizer, path, str(self.path))

    def lexicon(self, options: DecodingOptions | None = None):
        """The beam search's lexicon for ``options`` (see :func:`asr.lexicon.decoding_lexicon`)."""
        path = (options or self.options).lexicon
        return self.resources.get("lexicon", path) if path or self.is_phone else None

    @torch.no_grad()
    def log_probs(self, wavs: list[np.ndarray]) -> tuple[torch.Tensor, torch.Tensor]:
        """Batch of 1-D waveforms -> (B, T, V) log-probs on CPU and (B,) lengths."""
        lens = torch.tensor([max(w.size, self.min_samples) for w in wavs])
        batch = torch.zeros(len(wavs), int(lens.max()))
        for i, w in enumerate(wavs):
            batch[i, : w.size] = torch.from_numpy(w)
        with torch.autocast(self.device.type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            lp, out_lens = self.net(batch.to(self.device), lens.to(self.device))
        return lp.float().cpu(), out_lens.cpu()

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor,
               options: DecodingOptions | None = None) -> list[Transcript]:
        """(B, T, V) log-probs and (B,) lengths -> one Transcript per utterance (no times).

        Each Transcript's ``alternatives`` holds up to ``options.nbest`` distinct (text, score),
        best first (greedy decoding: its one path, scored by its log-probability).
        """
        d = options or self.options
        greedy = greedy_search(log_probs, lengths) if not d.uses_beam or self.is_phone else None
        if not d.uses_beam:  # a phone model's greedy output is its phones
            out = []
            for i, ids in enumerate(greedy):
                score = float(log_probs[i, : int(lengths[i])].max(-1).values.sum())
                text = self.tokenizer.decode(ids)
                out.append(Transcript(text, ids, score, [(text, score)], phones=self._phones(ids)))
            return out
        lm, lexicon = self.resources.for_options(d, self.is_phone)
        out = []
        hyps_of = beam_search(log_probs, lengths, d.beam_options(), self.tokenizer.token_strings(), lm, lexicon)
        for i, hyps in enumerate(hyps_of):
            if self.is_phone:  # the words the lexicon decoder chose
                texts = [(" ".join(h.words), h.score) for h in hyps]
            else:
                texts = [(self.tokenizer.decode(h.tokens), h.score) for h in hyps]
            alts: list[tuple[str, float]] = []  # distinct texts, best first
            for text, score in texts:
                if all(text != a for a, _ in alts):
                    alts.append((text, score))
            out.append(Transcript(texts[0][0], hyps[0].tokens, hyps[0].score, alts,
                                  phones=self._phones(greedy[i]) if greedy is not None else ""))
        return out

    def _phones(self, ids: list[int]) -> str:
        """A phone model's phones of ``ids`` without word boundaries ("" for other models)."""
        if not self.is_phone:
            return ""
        strings = self.tokenizer.token_strings()
        return " ".join(strings[i] for i in ids if i != 0 and strings[i] != " ")

    def transcribe_batch(self, wavs: list[np.ndarray], timestamps: bool | list[bool] | None = None,
                         offsets: list[float] | None = None,
                         options: DecodingOptions | None = None) -> list[Transcript]:
        """Transcribe a batch of short mono waveforms at the model's rate (no segmentation).

        Args:
            wavs: 1-D float32 arrays.
            timestamps: also fill ``words`` with start/end times (CTC forced alignment);
                one flag for the batch or one per waveform (default: ``options.timestamps``).
            offsets: seconds added to each utterance's word times.
            options: decoding options for this call (default: the model's).
        """
        d = options or self.options
        lp, lens = self.log_probs(wavs)
        out = self.decode(lp, lens, d)
        if timestamps is None:
            timestamps = d.timestamps
        flags = timestamps if isinstance(timestamps, list) else [timestamps] * len(wavs)
        for i, (t, w) in enumerate(zip(out, wavs)):
            t.duration = w.size / self.sample_rate
            if flags[i]:
                T = int(lens[i])
                energy = frame_energy_db(w, T, int(round(self.frame_shift * self.sample_rate)))
                # a phone model's words: those the lexicon decoder chose, else (greedy) its phones
                beam_words = t.text.split() if self.is_phone and d.uses_beam else None
                words = word_timestamps(lp[i, :T], t.tokens, self.tokenizer.token_strings(),
                                        self.frame_shift, offsets[i] if offsets else 0.0, energy_db=energy,
                                        words=beam_words, joiner=" " if self.is_phone else "")
                t.words = [wd.to_dict() for wd in words]
        return out

    def align(self, audio: str | Path | np.ndarray, text: str, sample_rate: int | None = None) -> list[dict]:
        """Word times of a known transcript in a short recording (CTC forced alignment).

        Args:
            audio: a path or a float array (samples,) at ``sample_rate``.
            text: the transcript; normalised like the model's training text.
            sample_rate: the array's rate (default: the model's rate).

        Returns:
            [{"word", "start", "end", "confidence"}] for the words of ``text``, in order.
        """
        if isinstance(audio, np.ndarray):
            wav = audio.astype(np.float32).reshape(audio.shape[0], -1).mean(1)
            wav = resample(wav, sample_rate or self.sample_rate, self.sample_rate)
        else:
            from asr.audio import load_audio

            wav = load_audio(audio, self.sample_rate)
        lp, lens = self.log_probs([wav])
        T = int(lens[0])
        energy = frame_energy_db(wav, T, int(round(self.frame_shift * self.sample_rate)))
        norm = self.tokenizer.normalize(text)
        tokens = self.tokenizer.encode(norm)
        words = word_timestamps(lp[0, :T], tokens, self.tokenizer.token_strings(), self.frame_shift,
                                energy_db=energy, words=norm.split() if self.is_phone else None)
        return [w.to_dict() for w in words]

    def transcribe(self, audio: str | Path | bytes | np.ndarray, options: DecodingOptions | None = None,
                   sample_rate: int | None = None, timestamps: bool | None = None,
                   progress: Callable[[float], None] | None = None) -> Transcript:
        """Transcribe one recording of any length.

        Args:
            audio: a path (any format, rate and channel count soundfile reads), the bytes of
                such a file, or a float array (samples,) or (samples, channels).
            options: decoding options for this call (default: the model's ``options``); the
                LM and lexicon they name are read once and again only when the file changes.
            sample_rate: the array's rate (default: the model's rate); ignored for files.
            timestamps: fill ``words`` with {"word", "start", "end", "confidence"} (seconds);
                default ``options.timestamps``.
            progress: called with the seconds of audio done after each batch of segments.

        Returns:
            the stitched Transcript: text, words (if asked), one entry per segment, and
            ``alternatives``: up to ``options.nbest`` (text, score) of the whole recording.

        Raises:
            AudioError: the audio is missing, unreadable, empty or not finite.
            LMError, LexiconError: the options name a file that cannot be read.
        """
        d = options or self.options
        if timestamps is not None:
            d = dataclasses.replace(d, timestamps=timestamps)
        opts = self.segment_opts
        texts, words, segments, tokens, phones, alternatives = [], [], [], [], [], []
        duration, score = 0.0, 0.0
        batch: list[tuple[float, np.ndarray]] = []

        def flush() -> None:
            nonlocal duration, score
            outs = self.transcribe_batch([w for _, w in batch], None, [o for o, _ in batch], d)
            for (off, w), t in zip(batch, outs):
                seg_end = off + w.size / self.sample_rate
                segments.append({"start": round(off, 3), "end": round(seg_end, 3), "text": t.text})
                if t.text:
                    texts.append(t.text)
                words.extend(t.words)
                tokens.extend(t.tokens)
                alternatives.append(t.alternatives)
                if t.phones:
                    phones.append(t.phones)
                score += t.score
                duration = max(duration, seg_end)
            if progress is not None:
                progress(sum(w.size for _, w in batch) / self.sample_rate)
            batch.clear()

        for off, wav in iter_segments(audio, self.sample_rate, opts, sample_rate):
            batch.append((off, wav))
            if sum(w.size for _, w in batch) >= opts.batch_seconds * self.sample_rate:
                flush()
        if batch:
            flush()
        return Transcript(" ".join(texts), tokens, score, combine_nbest(alternatives, d.nbest), duration,
                          words, segments, " ".join(phones))


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives hold a code/ folder; ``torch.save`` checkpoints do not."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            return any("/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def load_model(path: str | Path, device: str = "cpu", quantize: str = "", amp: str = "auto") -> Model:
    """Load a model for transcription.

    Args:
        path: a checkpoint written by ``asr train`` (it carries its frontend and tokenizer),
            or a file written by ``asr export`` (TorchScript ``.ts``/``.pt`` or ``.onnx``).
        device: "cpu", "cuda", "cuda:N" or "auto" (CUDA when available), for every kind of
            model: a TorchScript file is mapped there, an ONNX model runs on onnxruntime's
            CUDA provider for "cuda" (it needs onnxruntime-gpu). Exported int8 models and
            ``quantize="int8"`` run on the CPU only.
        quantize: "int8" applies dynamic int8 quantisation to a checkpoint's LSTM and
            linear layers at load time (CPU only); "" keeps float32.
        amp: a checkpoint's precision: "auto" runs it under bf16 autocast on CPUs with native
            bf16 (AMX; see asr.runtime.cpu_bf16_support), fp32 elsewhere; "bf16"
            forces it, "off" keeps fp32. Exported and int8 models ignore it.

    Returns:
        a Model; ``model.transcribe(path_or_array)`` gives a Transcript.

    Raises:
        DeviceError: a device this machine (or this kind of model) cannot run on.
        CheckpointError, ExportError: the file cannot be loaded.
    """
    from asr.runtime import resolve_device

    path = Path(path)
    auto = device == "auto"  # the best this model and machine allow, CPU as the fallback
    device = resolve_device(device)
    if quantize and torch.device(device).type != "cpu":
        if not auto:
            raise DeviceError(f"{path}: int8 quantisation runs on the CPU only; use device cpu")
        device = "cpu"
    if path.suffix == ".onnx" or (path.is_file() and _is_torchscript(path)):
        from asr.export import load_exported

        try:
            net, config, tokenizer, kind = load_exported(path, device)
        except DeviceError:
            if not auto:
                raise
            device = "cpu"
            net, config, tokenizer, kind = load_exported(path, device)
        return Model(net, config, tokenizer, path, device, kind=kind)
    from asr.checkpoint import load_checkpoint

    config, tokenizer, net, raw = load_checkpoint(path, device)
    kind = "checkpoint"
    if quantize:
        from asr.export import quantize_dynamic_int8

        net, kind = quantize_dynamic_int8(net.cpu()), "int8"
    dtype = None
    if kind == "checkpoint":
        from asr.runtime import inference_amp

        dtype = inference_amp(amp, torch.device(device))[0]
    model = Model(net, config, tokenizer, path, device, kind=kind, amp=dtype)
    model.train_state = raw.get("state") or {}
    return model


def read_stdin() -> bytes:
    """The bytes of an audio file piped to standard input (for ``asr transcribe -``)."""
    return sys.stdin.buffer.read()
