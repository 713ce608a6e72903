"""Every error a user can cause, in one place: ``ASRError`` and its kinds.

An ``ASRError`` is an expected failure (bad input, a missing file, a wrong setting).
``asr.cli.main`` catches it once and prints ``asr: error: <message>`` on one line, so
the message must say where (file, line, utterance id, setting) and what to do; the
exit code is the class's ``exit_code``: 2 for usage (the command line or config asks
for something impossible), 1 for a failure while doing the work. Anything else that
escapes is a bug and keeps its traceback.

Each kind also derives from the built-in exception it replaced (``ValueError`` or
``RuntimeError``), so code that catches those keeps working. The modules that raise
them re-export their own (``asr.audio.AudioError``, ``asr.text.TokenizerError``...).
This module imports nothing, so the CLI can catch errors without importing torch.

>>> e = TokenizerError("tok.json: file does not exist; train one with asr tokenizer train")
>>> isinstance(e, ASRError), isinstance(e, ValueError), e.exit_code
(True, True, 1)
>>> UsageError("no audio files given").exit_code
2
"""

from __future__ import annotations


def first_line(e: BaseException) -> str:
    """An exception's message, first line only (its type name when it has none): the "why" in
    ``<file>: cannot decode audio (<why>)``.

    >>> first_line(ValueError("Format not recognised.\\nmore"))
    'Format not recognised.'
    """
    msg = str(e).strip()
    return msg.splitlines()[0] if msg else type(e).__name__


class ASRError(Exception):
    """An expected failure: printed as one ``asr: error:`` line, exit code 1 (never a traceback)."""

    exit_code = 1


class UsageError(ASRError):
    """A command line that asks for something impossible (exit code 2, like argparse's errors)."""

    exit_code = 2


CLIError = UsageError  # the name cli.py, cli_data.py and cli_lm.py have always raised


class DeviceError(UsageError, RuntimeError):
    """A device this machine, or this kind of model, cannot run on (exit code 2): CUDA without
    a GPU, an ONNX model on CUDA without onnxruntime's CUDA provider, int8 on a GPU."""


class ConfigError(ASRError, ValueError):
    """A config file or override that does not match the config dataclasses (exit code 2)."""

    exit_code = 2


class AudioError(ASRError, RuntimeError):
    """An audio file that is missing, unreadable, empty or holds non-finite samples."""


class ManifestError(ASRError, ValueError):
    """A manifest line that cannot be used; the message names file and line."""


class CorpusError(ManifestError):
    """A corpus folder that cannot be imported; the message names the file and what to do."""


class TokenizerError(ASRError, ValueError):
    """A tokenizer file that cannot be read, or text the tokenizer cannot encode."""


class LMError(ASRError, ValueError):
    """A language model file that cannot be read."""


class BackendError(ASRError, RuntimeError):
    """A decoder backend that is not installed or cannot decode this vocabulary/LM."""


class CheckpointError(ASRError, RuntimeError):
    """A checkpoint that is missing, truncated, corrupt, unsafe or of an unknown format."""


class ExportError(ASRError, RuntimeError):
    """A model that cannot be exported or an exported file that cannot be loaded."""


class LexiconError(ASRError, ValueError):
    """A pronunciation lexicon line that cannot be used (its file:line is in the message)."""


class TrainingError(ASRError, RuntimeError):
    """A training run that cannot start or go on; the message says what to change."""


def one_line(e: object) -> str:
    """The message of ``e`` (an exception or a string) as one line: its lines joined by "; ".

    >>> one_line(ValueError("a.jsonl:3: bad JSON\\nfix the line"))
    'a.jsonl:3: bad JSON; fix the line'
    """
    parts = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    return "; ".join(parts) or type(e).__name__
