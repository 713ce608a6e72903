"""High-level API: ``load_model(path)`` and ``Model.transcribe(path_or_array)``.

Audio of any length is read as a stream and cut into segments of at most
``SegmentOptions.max_seconds`` at the quietest point of the last few seconds before
that limit (energy-based voice activity detection), so an hour-long recording is
transcribed in bounded memory and words are rarely cut in two. Segments are decoded
independently and their texts and word times stitched together.

>>> import asr                                          # doctest: +SKIP
>>> model = asr.load_model("exp/digits/model.pt")       # doctest: +SKIP
>>> model.transcribe("my_digits.wav").text              # doctest: +SKIP
'three one four'
"""

from __future__ import annotations

import dataclasses
import io
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from asr.align import frame_energy_db, word_timestamps
from asr.audio import AudioError, _reason, resample
from asr.config import Config, DecodeConfig
from asr.decode import BeamOptions, beam_search, greedy_search
from asr.decode.lm import load_lm
from asr.frames import frame_geometry
from asr.lexicon import decoding_lexicon


@dataclass(frozen=True)
class SegmentOptions:
    max_seconds: float = 30.0  # longest segment decoded at once (bounds memory and latency)
    search_seconds: float = 5.0  # look for the quietest cut point in this final stretch of a segment
    frame_ms: float = 20.0  # energy frame length for finding the cut point
    batch_seconds: float = 120.0  # audio seconds decoded together in one batch of segments


@dataclass
class Transcript:
    text: str  # the best hypothesis
    tokens: list[int] = field(default_factory=list)  # its token ids
    score: float = 0.0  # decoder score (log domain)
    nbest: list[tuple[str, float]] = field(default_factory=list)  # (text, score) alternatives
    duration: float = 0.0  # seconds of audio
    words: list[dict] = field(default_factory=list)  # [{"word", "start", "end", "confidence"}] if asked
    segments: list[dict] = field(default_factory=list)  # [{"start", "end", "text"}] of a long recording
    phones: str = ""  # phone models: the greedy phones (space-separated, no word boundaries)

    def to_dict(self) -> dict:
        return {"text": self.text, "duration": round(self.duration, 3), "words": self.words,
                "segments": self.segments}


def _quietest_cut(buf: np.ndarray, sr: int, opts: SegmentOptions) -> int:
    """Sample index in the last ``search_seconds`` of ``buf`` with the least local energy."""
    hop = max(1, int(sr * opts.frame_ms / 1000))
    lo = max(hop, buf.size - int(opts.search_seconds * sr))
    region = buf[lo: lo + (buf.size - lo) // hop * hop]
    if region.size < hop:
        return buf.size
    energy = (region.reshape(-1, hop).astype(np.float64) ** 2).mean(1)  # (frames,)
    if energy.size >= 3:  # smooth over 3 frames so a single quiet sample run is not chosen
        energy = np.convolve(energy, np.ones(3) / 3, mode="same")
    return lo + int(energy.argmin()) * hop + hop // 2


def iter_segments(
    source: str | Path | bytes | np.ndarray,
    sample_rate: int,
    opts: SegmentOptions = SegmentOptions(),
    source_rate: int | None = None,
) -> Iterator[tuple[float, np.ndarray]]:
    """Stream audio as segments cut at quiet points, resampled to ``sample_rate`` and mono.

    Args:
        source: a path (any format soundfile reads), the bytes of such a file, or a float
            array (samples,) or (samples, channels).
        sample_rate: the rate of the segments returned.
        opts: segment length and cut-point search.
        source_rate: the array's rate (arrays only; default ``sample_rate``).

    Yields:
        (start in seconds, float32 array (samples,)) per segment, in order; only one
        segment (plus one read block) is held in memory at a time.

    Raises:
        AudioError: missing, unreadable, empty or non-finite audio; the message names the source.
    """
    if isinstance(source, np.ndarray):
        arr = source.astype(np.float32, copy=False)
        arr = arr.mean(axis=1) if arr.ndim > 1 else arr
        yield from _cut(_array_blocks(arr), source_rate or sample_rate, sample_rate, opts, "<array>")
        return
    name = "<stdin>" if isinstance(source, (bytes, bytearray)) else str(source)
    if not isinstance(source, (bytes, bytearray)) and not Path(source).is_file():
        raise AudioError(f"{name}: file does not exist")
    if (len(source) if isinstance(source, (bytes, bytearray)) else Path(source).stat().st_size) == 0:
        raise AudioError(f"{name}: file is empty (0 bytes)")
    try:
        f = sf.SoundFile(io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else str(source))
    except Exception as e:  # soundfile raises several types
        raise AudioError(f"{name}: cannot decode audio ({_reason(e)})") from None
    with f:
        yield from _cut(_file_blocks(f, name), f.samplerate, sample_rate, opts, name)


def _array_blocks(arr: np.ndarray) -> Callable[[int], np.ndarray]:
    pos = 0

    def read(n: int) -> np.ndarray:
        nonlocal pos
        out = arr[pos: pos + n]
        pos += out.size
        return out

    return read


def _file_blocks(f: sf.SoundFile, name: str) -> Callable[[int], np.ndarray]:
    def read(n: int) -> np.ndarray:
        try:
            data = f.read(frames=n, dtype="float32", always_2d=True)
        except Exception as e:
            raise AudioError(f"{name}: cannot decode audio ({_reason(e)})") from None
        return data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]

    return read


def _cut(read: Callable[[int], np.ndarray], sr: int, target_sr: int, opts: SegmentOptions,
         name: str) -> Iterator[tuple[float, np.ndarray]]:
    max_n = max(1, int(opts.max_seconds * sr))
    buf = np.zeros(0, dtype=np.float32)
    pos = 0  # index of buf[0] in the source, in source samples
    total = 0
    while True:
        need = max_n - buf.size
        data = read(need)
        total += data.size
        buf = np.concatenate([buf, data]) if buf.size else data
        eof = data.size < need
        cut = buf.size if eof else _quietest_cut(buf, sr, opts)
        if cut > 0:
            seg = buf[:cut]
            if not np.isfinite(seg).all():
                raise AudioError(f"{name}: audio contains NaN or infinite samples near {pos / sr:.1f} s")
            yield pos / sr, np.ascontiguousarray(resample(seg, sr, target_sr), dtype=np.float32)
        if eof:
            break
        buf, pos = buf[cut:], pos + cut
    if total == 0:
        raise AudioError(f"{name}: audio is empty (0 samples)")


class Model:
    """A loaded model ready to transcribe: network (frontend + acoustic model), tokenizer, decoder.

    ``net(wavs (B, S), wav_lens (B,)) -> (log_probs (B, T, V), out_lens (B,))`` may be the
    PyTorch module of a checkpoint or an exported TorchScript/ONNX program (see asr.export).
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
        self.decode_cfg = decode or config.decode
        self.segment_opts = SegmentOptions()
        self.train_state: dict = {}  # epoch, step, best_wer... of a checkpoint
        self._lm = None
        self._lm_path = None
        self._lexicon = None
        self._lexicon_path = None

    def with_decoding(self, **overrides) -> Model:
        """Change decoding options (``method``, ``beam_size``, ``lm_path``...) in place.

        Raises:
            LMError, OSError: the LM or lexicon cannot be read (checked now, not per utterance).
        """
        self.decode_cfg = dataclasses.replace(self.decode_cfg, **overrides)
        self.prepare_decoding()  # only what the beam search needs: greedy needs no lexicon
        return self

    @property
    def is_phone(self) -> bool:
        """The model predicts phones: words come from a pronunciation lexicon."""
        return getattr(self.tokenizer, "kind", "") == "phone"

    @property
    def uses_beam(self) -> bool:
        """Decoding runs the beam search (method beam, or greedy asked with an LM)."""
        return self.decode_cfg.method != "greedy" or bool(self.decode_cfg.lm_path)

    def _resources(self):
        d = self.decode_cfg
        if d.lm_path and self._lm_path != d.lm_path:
            self._lm, self._lm_path = load_lm(d.lm_path), d.lm_path
        if (d.lexicon or self.is_phone) and (self._lexicon is None or self._lexicon_path != d.lexicon):
            self._lexicon, self._lexicon_path = self.lexicon(), d.lexicon
        return (self._lm if d.lm_path else None), (self._lexicon if d.lexicon or self.is_phone else None)

    def prepare_decoding(self) -> None:
        """Load the LM and lexicon the decoding settings need now, so that a bad file or a phone
        model without a lexicon is reported before any audio is decoded.

        Raises:
            LexiconError, LMError: the message names the file (and line) or the model.
        """
        if self.uses_beam:
            self._resources()

    def lexicon(self):
        """The beam search's lexicon (see :func:`asr.lexicon.decoding_lexicon`)."""
        return decoding_lexicon(self.tokenizer, self.decode_cfg.lexicon, str(self.path))

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

    def decode(self, log_probs: torch.Tensor, lengths: torch.Tensor) -> list[Transcript]:
        """(B, T, V) log-probs and (B,) lengths -> one Transcript per utterance (no times)."""
        d = self.decode_cfg
        greedy = greedy_search(log_probs, lengths) if not self.uses_beam or self.is_phone else None
        if not self.uses_beam:  # a phone model's greedy output is its phones
            return [Transcript(self.tokenizer.decode(ids), ids, phones=self._phones(ids)) for ids in greedy]
        if d.method not in ("greedy", "beam"):
            raise ValueError(f"decode.method must be greedy or beam, got {d.method!r}")
        lm, lexicon = self._resources()
        # every decode-config field that BeamOptions also has (beam_size, lm_weight, ...) is passed on
        names = {f.name for f in dataclasses.fields(BeamOptions)} & {f.name for f in dataclasses.fields(d)}
        opts = BeamOptions(**{k: getattr(d, k) for k in names})
        out = []
        for i, hyps in enumerate(beam_search(log_probs, lengths, opts, self.tokenizer.token_strings(), lm, lexicon)):
            if self.is_phone:  # the words the lexicon decoder chose
                texts = [(" ".join(h.words), h.score) for h in hyps]
            else:
                texts = [(self.tokenizer.decode(h.tokens), h.score) for h in hyps]
            out.append(Transcript(texts[0][0], hyps[0].tokens, hyps[0].score, texts,
                                  phones=self._phones(greedy[i]) if greedy is not None else ""))
        return out

    def _phones(self, ids: list[int]) -> str:
        """A phone model's phones of ``ids`` without word boundaries ("" for other models)."""
        if not self.is_phone:
            return ""
        strings = self.tokenizer.token_strings()
        return " ".join(strings[i] for i in ids if i != 0 and strings[i] != " ")

    def transcribe_batch(self, wavs: list[np.ndarray], timestamps: bool | list[bool] = False,
                         offsets: list[float] | None = None) -> list[Transcript]:
        """Transcribe a batch of short mono waveforms at the model's rate (no segmentation).

        Args:
            wavs: 1-D float32 arrays.
            timestamps: also fill ``words`` with start/end times (CTC forced alignment);
                one flag for the batch or one per waveform.
            offsets: seconds added to each utterance's word times.
        """
        lp, lens = self.log_probs(wavs)
        out = self.decode(lp, lens)
        flags = timestamps if isinstance(timestamps, list) else [timestamps] * len(wavs)
        for i, (t, w) in enumerate(zip(out, wavs)):
            t.duration = w.size / self.sample_rate
            if flags[i]:
                T = int(lens[i])
                energy = frame_energy_db(w, T, int(round(self.frame_shift * self.sample_rate)))
                # a phone model's words: those the lexicon decoder chose, else (greedy) its phones
                beam_words = t.text.split() if self.is_phone and self.uses_beam else None
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

    def transcribe(self, audio: str | Path | bytes | np.ndarray, sample_rate: int | None = None,
                   timestamps: bool = False,
                   progress: Callable[[float], None] | None = None) -> Transcript:
        """Transcribe one recording of any length.

        Args:
            audio: a path (any format, rate and channel count soundfile reads), the bytes of
                such a file, or a float array (samples,) or (samples, channels).
            sample_rate: the array's rate (default: the model's rate); ignored for files.
            timestamps: fill ``words`` with {"word", "start", "end", "confidence"} (seconds).
            progress: called with the seconds of audio done after each batch of segments.

        Returns:
            the stitched Transcript: text, words (if asked) and one entry per segment.

        Raises:
            AudioError: the audio is missing, unreadable, empty or not finite.
        """
        opts = self.segment_opts
        texts, words, segments, tokens, phones = [], [], [], [], []
        duration, score = 0.0, 0.0
        batch: list[tuple[float, np.ndarray]] = []

        def flush() -> None:
            nonlocal duration, score
            outs = self.transcribe_batch([w for _, w in batch], timestamps, [o for o, _ in batch])
            for (off, w), t in zip(batch, outs):
                seg_end = off + w.size / self.sample_rate
                segments.append({"start": round(off, 3), "end": round(seg_end, 3), "text": t.text})
                if t.text:
                    texts.append(t.text)
                words.extend(t.words)
                tokens.extend(t.tokens)
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
        out = Transcript(" ".join(texts), tokens, score, [], duration, words, segments, " ".join(phones))
        if len(segments) == 1:
            out.nbest = [(out.text, score)]
        return out


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
        device: "cpu" or "cuda" (exported int8 and ONNX models run on the CPU).
        quantize: "int8" applies dynamic int8 quantisation to a checkpoint's LSTM and
            linear layers at load time (CPU only); "" keeps float32.
        amp: a checkpoint's precision: "auto" runs it under bf16 autocast on CPUs with native
            bf16 (AMX/AVX512-BF16; see asr.runtime.cpu_bf16_support), fp32 elsewhere; "bf16"
            forces it, "off" keeps fp32. Exported and int8 models ignore it.

    Returns:
        a Model; ``model.transcribe(path_or_array)`` gives a Transcript.
    """
    path = Path(path)
    if path.suffix == ".onnx" or (path.is_file() and _is_torchscript(path)):
        from asr.export import load_exported

        net, config, tokenizer, kind = load_exported(path)
        return Model(net, config, tokenizer, path, "cpu", kind=kind)
    from asr.checkpoint import load_checkpoint

    config, tokenizer, net, raw = load_checkpoint(path, device)
    kind = "checkpoint"
    if quantize:
        from asr.export import quantize_dynamic_int8

        net, kind = quantize_dynamic_int8(net.cpu()), "int8"
        device = "cpu"
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
