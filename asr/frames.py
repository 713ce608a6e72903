"""Frame geometry: how many samples make a feature frame, how many feature frames make an output
frame, and how long an output frame lasts. The one home of this arithmetic: the frontend, the
model's subsampling, the trainability filter (too many CTC targets for the frames) and the
timestamps/padding of asr.transcribe all ask :func:`frame_geometry`.

Framing is torch.stft's with ``center=False``: a frame spans ``n_fft`` samples (the window
rounded up to a power of two) and frames start every ``hop`` samples. Counting with ``n_fft``
rather than the window length keeps a short utterance from reading the batch's padding.
Shorter input is padded to one frame. Stack-k subsampling keeps ``frames // k`` frames; each
stride-2 convolution (kernel 3, padding 1) keeps ``(frames - 1) // 2 + 1``.

The counts work on Python ints and on integer tensors alike (``//`` floors for both, and a
traced or exported model keeps the arithmetic as tensor operations).

>>> from asr.config import FeatureConfig
>>> g = frame_geometry(FeatureConfig(sample_rate=16000, win_ms=25, hop_ms=10), "stack3")
>>> g.n_fft, g.hop, g.factor
(512, 160, 3)
>>> g.feature_frames(16000), g.output_frames(g.feature_frames(16000)), g.frame_seconds
(97, 32, 0.03)
>>> g.min_samples  # the shortest input that gives one output frame
832
"""

from __future__ import annotations

from dataclasses import dataclass

from asr.config import SUBSAMPLING_FACTOR, FeatureConfig


@dataclass(frozen=True)
class FrameGeometry:
    """Samples -> feature frames -> output frames, for one feature config and subsampling kind."""

    sample_rate: int  # samples per second of the model's input
    win_length: int  # analysis window, samples
    hop: int  # feature frame shift, samples
    n_fft: int  # samples each feature frame spans (the window rounded up to a power of two)
    subsampling: str = "none"  # model.subsampling: "none", "stackK" or "convK"

    @property
    def factor(self) -> int:
        """Feature frames per output frame."""
        return SUBSAMPLING_FACTOR[self.subsampling]

    @property
    def frame_seconds(self) -> float:
        """Seconds per output frame (the feature hop times the subsampling factor)."""
        return self.hop * self.factor / self.sample_rate

    @property
    def min_feature_frames(self) -> int:
        """The fewest feature frames that give one output frame (stack-k needs k, conv needs 1)."""
        return self.factor if self.subsampling.startswith("stack") else 1

    @property
    def min_samples(self) -> int:
        """The fewest samples that give one output frame (shorter input is zero-padded to this)."""
        return self.n_fft + (self.min_feature_frames - 1) * self.hop

    def feature_frames(self, samples, pad: bool = True):
        """Feature frames the frontend makes of ``samples`` samples (int or integer tensor).

        Args:
            samples: waveform length(s).
            pad: count as the frontend does, which pads input shorter than ``n_fft`` to one
                frame; False: frames that fit in the samples as given (0 when too short).
        """
        if pad:
            samples = _at_least(samples, self.n_fft)
        return _at_least((samples - self.n_fft) // self.hop + 1, 0)

    def output_frames(self, frames):
        """Output frames the model's subsampling makes of ``frames`` feature frames (int or tensor)."""
        return subsampled_frames(frames, self.subsampling)

    def samples_to_output_frames(self, samples):
        """Output frames for ``samples`` samples of audio: the two steps above."""
        return self.output_frames(self.feature_frames(samples))

    def seconds_to_output_frames(self, seconds: float) -> int:
        """Output frames for an utterance of ``seconds`` (a manifest duration)."""
        return self.samples_to_output_frames(int(round(seconds * self.sample_rate)))


def frame_geometry(feature: FeatureConfig, subsampling: str = "none") -> FrameGeometry:
    """The frame geometry of a feature config and a ``model.subsampling`` kind.

    Args:
        feature: sample rate, window and hop (ms).
        subsampling: one of ``asr.config.SUBSAMPLING_FACTOR``.
    Returns:
        FrameGeometry with the window, hop and span in samples.
    """
    if subsampling not in SUBSAMPLING_FACTOR:
        raise ValueError(f"model.subsampling must be one of {', '.join(SUBSAMPLING_FACTOR)}, "
                         f"got {subsampling!r}")
    sr = feature.sample_rate
    win = int(round(sr * feature.win_ms / 1000))
    return FrameGeometry(sample_rate=sr, win_length=win, hop=int(round(sr * feature.hop_ms / 1000)),
                         n_fft=1 << (win - 1).bit_length(), subsampling=subsampling)


def subsampled_frames(frames, subsampling: str):
    """Frames left after ``subsampling`` ("none", "stackK", "convK") of ``frames`` (int or tensor).

    "conv2" is one stride-2 convolution (kernel 3, padding 1), "conv4" two; the model masks
    between its convolutions with ``subsampled_frames(n, "conv2")``.
    """
    if subsampling.startswith("stack"):
        return frames // SUBSAMPLING_FACTOR[subsampling]
    if subsampling.startswith("conv"):
        for _ in range(SUBSAMPLING_FACTOR[subsampling].bit_length() - 1):  # conv2: 1 layer, conv4: 2
            frames = (frames - 1) // 2 + 1
    return frames


def min_frames_for(tokens: list[int]) -> int:
    """Output frames CTC needs for a target: one per token plus a blank between each repeated pair."""
    return len(tokens) + sum(1 for a, b in zip(tokens, tokens[1:]) if a == b)


def _at_least(x, lo: int):
    """max(x, lo) for an int or a tensor."""
    return x.clamp(min=lo) if hasattr(x, "clamp") else max(x, lo)
