"""asr: BiLSTM-CTC speech recognition (features, training, beam search + n-gram LM, WER reports)."""

__version__ = "0.1.0"


def load_model(path, device: str = "cpu"):
    """Load a trained model for transcription; see :mod:`asr.transcribe`."""
    from asr.transcribe import load_model as _load

    return _load(path, device)


__all__ = ["load_model", "__version__"]
