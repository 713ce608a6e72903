"""The decoder backends of tools/bench_decode.py (asr.decode.backends): the same log-probs, LM
and word list given to ours, pyctcdecode and flashlight-text decode to the same words."""

from __future__ import annotations

import pytest
from test_decode import CHARS, WORDS, spelled_log_probs, write_word_lm

from asr.decode import BeamOptions
from asr.decode.backends import make_decoder

# alpha 0: the word list alone must turn the acoustically preferred "cot" into "cat" (pyctcdecode,
# unlike ours, lets this tiny LM at alpha >= 0.5 rewrite the confident "c" into "mat")
OPTS = BeamOptions(beam_size=8, lm_weight=0.0, word_bonus=0.0)


@pytest.fixture(scope="module")
def lm_path(tmp_path_factory) -> str:
    return write_word_lm(tmp_path_factory.mktemp("lm"))


def words(name: str, lm_path: str, lexicon: set[str] | None) -> list[str]:
    # "the c?t": the acoustics prefer "cot" (0.55 against 0.45); the LM knows "cat" only
    lp = spelled_log_probs("the cat", "a", {"a": 0.45, "o": 0.55})
    return make_decoder(name, CHARS, OPTS, lm_path, lexicon)(lp, [lp.shape[1]])[0][0].words


@pytest.mark.parametrize("name", ["ours", "flashlight", "pyctcdecode"])
def test_backends_agree_with_the_lm_and_word_list(lm_path, name):
    if name == "flashlight":
        pytest.importorskip("torchaudio.models.decoder").ctc_decoder  # noqa: B018
        pytest.importorskip("flashlight.lib.text")
    if name == "pyctcdecode":
        pytest.importorskip("pyctcdecode")
        pytest.importorskip("kenlm")
    assert words(name, lm_path, set(WORDS)) == ["the", "cat"]


def test_pyctcdecode_takes_the_lexicon_as_its_unigrams(lm_path):
    pytest.importorskip("pyctcdecode")
    pytest.importorskip("kenlm")
    # the word list decides: the LM knows "cat", but outside the unigrams it pays pyctcdecode's
    # unknown-word offset (-10); were the lexicon ignored, the LM's vocabulary would keep "cat"
    assert words("pyctcdecode", lm_path, set(WORDS)) == ["the", "cat"]
    assert words("pyctcdecode", lm_path, set(WORDS) - {"cat"})[1] != "cat"
