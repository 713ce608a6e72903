"""asr: BiLSTM-CTC speech recognition (features, training, beam search + n-gram LM, WER reports)."""

__version__ = "0.1.0"


def load_model(path, device: str = "cpu", quantize: str = "", amp: str = "auto"):
    """Load a trained (or exported) model for transcription; see :func:`asr.transcribe.load_model`."""
    from asr.transcribe import load_model as _load

    return _load(path, device, quantize, amp)


__all__ = ["load_model", "__version__"]
