"""Every subcommand, given a bad argument of each kind, fails in one line with the right exit code.

The cases run ``asr.cli.main`` in this process (what the ``asr`` script and ``python -m asr``
call; a torch import per subprocess would cost seconds each on a busy machine); the issue's
example also runs as a real ``python -m asr`` subprocess. A subcommand added to the parser without
cases here fails ``test_every_subcommand_has_bad_input_cases``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest
from conftest import ROOT, write_digits_manifest

from asr.cli import build_parser, main
from asr.errors import (
    ASRError,
    AudioError,
    CheckpointError,
    CLIError,
    ConfigError,
    ExportError,
    LMError,
    ManifestError,
    TokenizerError,
    TrainingError,
    UsageError,
)

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
DIGITS = str(ROOT / "conf" / "digits.yaml")

# (argv, exit code, text the one error line must hold). Placeholders: {w} the work folder,
# {m} an (untrained) checkpoint, {dev} a real 2-utterance manifest, {wav} one of its files,
# {txt} a text file that is neither audio, manifest, checkpoint, LM nor tokenizer,
# {bad} a manifest whose only line is not JSON, {empty} an empty folder.
CASES = [
    # train: missing config, wrong config, typo in an override, missing tokenizer, missing manifest
    ("train -c {w}/none.yaml", 2, "config file {w}/none.yaml does not exist"),
    ("train -c {txt}", 2, "top level must be a mapping"),
    (f"train -c {DIGITS} train.lrr=1", 2, "unknown key 'lrr' in train; valid keys are"),
    (f"train -c {DIGITS} tokenizer.path={{w}}/missing.json data.train_manifest={{dev}} run_dir={{w}}/r1",
     1, "tokenizer.path: tokenizer file {w}/missing.json does not exist"),
    (f"train -c {DIGITS} data.train_manifest={{w}}/none.jsonl run_dir={{w}}/r2", 1,
     "manifest {w}/none.jsonl does not exist"),
    (f"train -c {DIGITS} data.train_manifest={{bad}} run_dir={{w}}/r3", 1, "no usable training utterances"),
    # evaluate: missing/wrong model, missing/unusable manifest, bad LM, lexicon and device
    ("evaluate -m {w}/none.pt --manifest {dev}", 1, "checkpoint {w}/none.pt does not exist"),
    ("evaluate -m {txt} --manifest {dev}", 1, "{txt}: not a readable checkpoint"),
    ("evaluate -m {m} --manifest {w}/none.jsonl --out {w}/ev", 1, "manifest {w}/none.jsonl does not exist"),
    ("evaluate -m {m} --manifest {bad} --out {w}/ev", 1, "{bad}: no utterances to evaluate"),
    ("evaluate -m {m} --manifest {dev} --lm {w}/none.arpa --out {w}/ev", 1,
     "language model {w}/none.arpa does not exist"),
    ("evaluate -m {m} --manifest {dev} --lm {txt} --out {w}/ev", 1, "1-grams: section"),
    ("evaluate -m {m} --manifest {dev} --method beam --lexicon {w}/none.txt --out {w}/ev", 1,
     "lexicon file {w}/none.txt does not exist"),
    ("evaluate -m {m} --manifest {dev} --device nonsense --out {w}/ev", 2, "--device 'nonsense' is not a device"),
    ("evaluate -m {m} --manifest {dev} --method viterbi", 2, "invalid choice: 'viterbi'"),
    # compare
    ("compare {w}/none {w}/none2", 1, "{w}/none: no such report"),
    ("compare {txt} {txt}", 1, "{txt}: not a readable report.json"),
    # transcribe: missing/wrong model, missing/wrong audio, no model at all, bad LM, bad format
    ("transcribe -m {w}/none.pt {wav}", 1, "checkpoint {w}/none.pt does not exist"),
    ("transcribe -m {txt} {wav}", 1, "{txt}: not a readable checkpoint"),
    ("transcribe -m {m} {w}/none.wav", 1, "{w}/none.wav: file does not exist"),
    ("transcribe -m {m} {txt}", 1, "{txt}: cannot decode audio"),
    ("transcribe {wav}", 2, "give the model with --model"),
    ("transcribe -m {m} {wav} --lm {txt}", 1, "1-grams: section"),
    ("transcribe -m {m} {wav} {wav} -f srt", 2, "needs --output-dir"),
    ("transcribe -m {m} {wav} -f docx", 2, "invalid choice: 'docx'"),
    ("transcribe -m {m} {wav} --nbest 0", 2, "--nbest must be at least 1"),
    ("transcribe -m {m} {wav} --nbest 3 --method greedy", 2, "--nbest N needs the beam search"),
    ("transcribe -m {m} {wav} --nbest 9", 2, "decode.nbest=9 must not exceed decode.beam_size=8"),
    # export
    ("export {w}/none.pt", 1, "checkpoint {w}/none.pt does not exist"),
    ("export {txt}", 1, "{txt}: not a readable checkpoint"),
    ("export {m} --format onnx --quantize int8", 1, "int8 quantisation is available for TorchScript"),
    # average
    ("average {w}/none.pt --out {w}/a.pt", 1, "checkpoint {w}/none.pt does not exist"),
    ("average {txt} {m} --out {w}/a.pt", 1, "{txt}: not a readable checkpoint"),
    # data import | split | validate | stats
    ("data import librispeech {w}/none -o {w}/x.jsonl", 1, "{w}/none is not a folder"),
    ("data import folder {empty} -o {w}/x.jsonl", 1, "{empty}: no audio files found"),
    ("data import kaldi {empty} -o {w}/x.jsonl", 1, "wav.scp does not exist"),
    ("data import folder {empty} -o {w}/x.jsonl --speaker-pattern ([", 2,
     "--speaker-pattern '([' is not a regular expression"),
    ("data split {w}/none.jsonl -o {w}/a.jsonl {w}/b.jsonl", 1, "manifest {w}/none.jsonl does not exist"),
    ("data split {dev} -o {w}/a.jsonl {w}/b.jsonl --dev-speakers nobody", 1,
     "dev speaker(s) nobody not in the manifest"),
    ("data split {bad} -o {w}/a.jsonl {w}/b.jsonl", 1, "{bad}:1: not valid JSON"),
    ("data validate {w}/none.jsonl", 1, "manifest {w}/none.jsonl does not exist"),
    ("data validate {dev} --tokenizer {w}/none.json", 1, "tokenizer file {w}/none.json does not exist"),
    ("data validate {dev} --model {txt}", 1, "{txt}: not a readable checkpoint"),
    ("data stats {w}/none.jsonl", 1, "manifest {w}/none.jsonl does not exist"),
    # tokenizer train
    ("tokenizer train {w}/none.jsonl -o {w}/t.json", 1, "manifest {w}/none.jsonl does not exist"),
    ("tokenizer train {bad} -o {w}/t.json", 1, "{bad}: no transcripts to train a tokenizer on"),
    # lm build
    ("lm build {w}/none.txt -o {w}/x.arpa", 1, "LM training text {w}/none.txt does not exist"),
    ("lm build {bad} -o {w}/x.arpa", 1, "{bad}:1: not a manifest line"),
    ("lm build {txt} -o {w}/x.arpa --order 1", 1, "--order must be 2 or more"),
    # tune-lm and decode --tune-lm
    ("tune-lm -m {w}/none.pt --manifest {dev} --lm {txt}", 1, "checkpoint {w}/none.pt does not exist"),
    ("tune-lm -m {m} --manifest {w}/none.jsonl --lm {txt}", 1, "manifest {w}/none.jsonl does not exist"),
    ("tune-lm -m {m} --manifest {dev} --lm {w}/none.arpa", 1, "language model {w}/none.arpa does not exist"),
    ("tune-lm -m {m} --manifest {dev} --lm {txt}", 1, "1-grams: section"),
    ("decode -m {m} --manifest {dev} --lm {txt}", 2, "asr decode needs --tune-lm"),
    ("decode --tune-lm -m {m} --manifest {dev} --lm {txt}", 1, "1-grams: section"),
    # lm mix, lm ppl
    ("lm mix {w}/none.arpa {txt} --weights 0.5,0.5 -o {w}/x.arpa", 1, "language model {w}/none.arpa does not exist"),
    ("lm ppl {w}/none.arpa {txt}", 1, "language model {w}/none.arpa does not exist"),
    # data degrade
    ("data degrade {w}/none.jsonl -o {w}/deg", 1, "manifest {w}/none.jsonl does not exist"),
    ("data degrade {dev} --kind mp3:30 -o {w}/deg", 2, "kind 'mp3:30': MP3 at 16 kHz has the bit rates"),
    # g2p, lexicon
    ("g2p eval --model {w}/none.pt", 2, "G2P model {w}/none.pt does not exist"),
    ("g2p pronounce --model {w}/none.pt hello", 2, "G2P model {w}/none.pt does not exist"),
    ("g2p train -o {w}/g.pt --epochs 0", 2, "--epochs must be 1 or more"),
    ("lexicon {w}/none.txt -o {w}/l.txt", 2, "word list {w}/none.txt does not exist"),
    # serve (checked before the model loads or a port opens)
    ("serve -m {w}/none.pt", 2, "{w}/none.pt: model file does not exist"),
]


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict[str, str]:
    """The files the cases name: an untrained tiny checkpoint, a real manifest, bad files."""
    from asr.checkpoint import build_model, save_checkpoint
    from asr.config import load_config
    from asr.text import CharTokenizer

    w = tmp_path_factory.mktemp("errors")
    cfg = load_config(None, ["model.num_layers=1", "model.hidden_size=8", "feature.n_mels=10",
                             "model.subsampling=conv2", "model.conv_channels=2"])
    tok = CharTokenizer("abcdefghijklmnopqrstuvwxyz' ")
    save_checkpoint(w / "m.pt", cfg, tok, build_model(cfg, len(tok)).eval())
    dev = write_digits_manifest(w, 2, "dev")
    (w / "notes.txt").write_text("hello\nworld\n")
    (w / "bad.jsonl").write_text("{not json\n")
    (w / "empty").mkdir()
    return {"w": str(w), "m": str(w / "m.pt"), "dev": str(dev), "wav": json.loads(dev.read_text().split("\n")[0])["audio"],
            "txt": str(w / "notes.txt"), "bad": str(w / "bad.jsonl"), "empty": str(w / "empty")}


@pytest.fixture(autouse=True)
def _fresh_asr_logger():
    """``asr train`` logs to the stderr of its time: capsys's, closed once the case is over."""
    import logging

    yield
    log = logging.getLogger("asr")
    for h in list(log.handlers):
        log.removeHandler(h)
        h.close()
    log.propagate = True


def _command(argv: str) -> str:
    """The subcommand a case runs: "train", "data import", "lm build"..."""
    words = argv.split()
    return " ".join(words[:2]) if words[0] in _GROUPS else words[0]


def _leaf_commands() -> set[str]:
    """Every runnable (sub)command of the parser: "train", "data import", ..."""
    import argparse

    def subs(p: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
        for a in p._actions:
            if isinstance(a, argparse._SubParsersAction):
                return dict(a.choices)
        return {}

    out = set()
    for name, p in subs(build_parser()).items():
        inner = subs(p)
        out |= {f"{name} {n}" for n in inner} if inner else {name}
    return out


_GROUPS = {c.split()[0] for c in _leaf_commands() if " " in c}


def test_every_subcommand_has_bad_input_cases():
    covered = {_command(argv) for argv, _, _ in CASES}
    missing = _leaf_commands() - covered
    assert not missing, f"add bad-input cases to tests/test_errors.py for: {', '.join(sorted(missing))}"


@pytest.mark.parametrize("argv,code,text", CASES, ids=[c[0].split(" -")[0][:40] for c in CASES])
def test_bad_input_is_one_line_and_the_right_exit_code(work, argv, code, text, capsys):
    args = [a.format(**work) for a in argv.split()]
    capsys.readouterr()
    try:
        rc = main(args)
    except SystemExit as e:  # argparse rejects the command line itself: usage + one error line
        rc = e.code
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    errors = [ln for ln in err.splitlines() if re.match(r"asr( [a-z-]+)*: error: ", ln)]  # argparse: "asr cmd:"
    assert len(errors) == 1 and err.rstrip("\n").splitlines()[-1] == errors[0], err
    assert text.format(**work) in errors[0], err
    assert rc == code, err


def test_the_issue_example_runs_as_a_command_without_a_traceback(work):
    """``python -m asr train -c conf/digits.yaml tokenizer.path=missing.json`` (issue 17)."""
    r = subprocess.run([sys.executable, "-m", "asr", "train", "-c", DIGITS, "tokenizer.path=missing.json",
                        f"data.train_manifest={work['dev']}"], capture_output=True, text=True, env=ENV,
                       cwd=work["w"], timeout=300)
    assert r.returncode == 1, r.stderr
    assert "Traceback" not in r.stderr
    assert r.stderr.splitlines()[-1] == (
        "asr: error: tokenizer.path: tokenizer file missing.json does not exist; write one with "
        "`asr tokenizer train ... -o missing.json`; or set tokenizer.path= to train one from the training text")


def test_every_error_kind_is_an_asr_error_and_keeps_its_builtin_base():
    for cls, builtin in ((AudioError, RuntimeError), (CheckpointError, RuntimeError), (ConfigError, ValueError),
                         (ExportError, RuntimeError), (LMError, ValueError), (ManifestError, ValueError),
                         (TokenizerError, ValueError), (TrainingError, RuntimeError)):
        assert issubclass(cls, ASRError) and issubclass(cls, builtin), cls
    assert CLIError is UsageError and UsageError.exit_code == ConfigError.exit_code == 2
    assert AudioError.exit_code == ManifestError.exit_code == 1
    # the old homes still export them (other code imports them from there)
    import asr.audio
    import asr.checkpoint
    import asr.decode.lm
    import asr.importers
    import asr.runtime
    import asr.text

    assert asr.audio.AudioError is AudioError and asr.checkpoint.CheckpointError is CheckpointError
    assert asr.decode.lm.LMError is LMError and asr.text.TokenizerError is TokenizerError
    assert asr.runtime.TrainingError is TrainingError and issubclass(asr.importers.CorpusError, ManifestError)


def test_a_bug_is_not_hidden(monkeypatch):
    """Only expected failures become one line: anything else keeps its traceback for the report."""
    import asr.cli

    def broken(args):
        raise ZeroDivisionError("a bug")

    parser = asr.cli.build_parser()
    monkeypatch.setattr(asr.cli, "build_parser", lambda: parser)
    parser._subparsers._group_actions[0].choices["compare"].set_defaults(func=broken)
    with pytest.raises(ZeroDivisionError):
        main(["compare", "a", "b"])
