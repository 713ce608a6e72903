"""asr: BiLSTM-CTC speech recognition (features, training, beam search + n-gram LM, WER reports).

``asr.load_model(path)`` gives a model to transcribe with; ``asr.DecodingOptions`` says how to
decode (per call or through ``model.with_decoding``). Both import torch only when first used.
"""

__version__ = "0.1.0"


def load_model(path, device: str = "cpu", quantize: str = "", amp: str = "auto"):
    """Load a trained (or exported) model for transcription; see :func:`asr.transcribe.load_model`."""
    from asr.transcribe import load_model as _load

    return _load(path, device, quantize, amp)


def __getattr__(name: str):
    if name == "DecodingOptions":  # imported on first use: `import asr` stays light
        from asr.decoding import DecodingOptions

        return DecodingOptions
    raise AttributeError(f"module 'asr' has no attribute {name!r}")


__all__ = ["load_model", "DecodingOptions", "__version__"]
