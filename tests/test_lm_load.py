"""Loading word n-gram LMs at scale: the C++ ARPA reader, its checks of bad files, the vocabulary."""

from __future__ import annotations

import gzip
import logging
import math
import random

import numpy as np
import pytest

from asr import lm_table
from asr.decode import BeamOptions, beam_search
from asr.decode import beam as beam_mod
from asr.decode import lm as lm_mod
from asr.decode.lm import LMError, NGramLM, arpa_text, load_lm, parse_arpa
from asr.lm_build import estimate

native = pytest.mark.skipif(not beam_mod.native_available(), reason="C++ beam search not built")
WORDS = "the cat sat on a mat dog ran up hill and down".split()


@pytest.fixture(scope="module")
def arpa(tmp_path_factory):
    rng = random.Random(1)
    sents = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 7))) for _ in range(200)]
    path = tmp_path_factory.mktemp("lm") / "lm.arpa"
    path.write_text(arpa_text(estimate(sents, 3)))
    return path


@native
def test_native_file_reader_scores_like_python_tables(arpa, tmp_path):
    lm = load_lm(arpa)
    assert lm._ngrams is None  # the C++ reader alone: no Python tables for a file read from disk
    py = NGramLM(parse_arpa(arpa.read_text()))
    gz = tmp_path / "lm.arpa.gz"
    gz.write_bytes(gzip.compress(arpa.read_bytes()))
    zipped = load_lm(gz)
    rng = random.Random(2)
    for _ in range(50):
        words = [rng.choice(WORDS + ["zebra"]) for _ in range(rng.randint(0, 6))]
        want = py.sentence_logprob(words)
        assert lm.sentence_logprob(words) == pytest.approx(want, abs=1e-9)
        assert zipped.sentence_logprob(words) == pytest.approx(want, abs=1e-9)
    assert lm.words() == [w[0] for w in py.ngrams[1] if w[0] not in ("<s>", "</s>", "<unk>")]
    assert set(lm.words()) == set(WORDS)
    info = lm.info()
    assert info["order"] == 3
    assert info["counts"] == [len(py.ngrams[n]) for n in (1, 2, 3)]
    assert info["bytes"] > 0


def _with_counts(text: str, order: int, count: int) -> str:
    lines = text.split("\n")
    i = next(k for k, line in enumerate(lines) if line.startswith(f"ngram {order}="))
    lines[i] = f"ngram {order}={count}"
    return "\n".join(lines)


@pytest.mark.parametrize("impl", [pytest.param("native", marks=native), "python", "tables"])
def test_bad_arpa_files_name_the_file_and_line(arpa, tmp_path, monkeypatch, impl):
    # the C++ reader, and asr.decode.arpa's one Python reader under the decoder's dicts and lm_table
    if impl == "python":
        monkeypatch.setattr("asr.decode.lm._native_module", lambda: None)
    load_lm = lm_table.read_arpa if impl == "tables" else lm_mod.load_lm
    text = arpa.read_text()
    n2 = len(parse_arpa(text)[2])
    wrong = tmp_path / "wrong.arpa"
    wrong.write_text(_with_counts(text, 2, n2 + 5))
    cut = tmp_path / "cut.arpa"
    cut.write_text(text[: text.index("\n", text.index("\\3-grams:") + 200) + 1])  # whole lines
    noend = tmp_path / "noend.arpa"
    noend.write_text(text[: text.index("\\end\\")])
    section = text[: text.index("\\2-grams:")].count("\n") + 1
    with pytest.raises(LMError, match=rf"wrong\.arpa: line {section}: .*announces {n2 + 5} 2-grams .* holds {n2}"):
        load_lm(wrong)
    with pytest.raises(LMError, match=r"cut\.arpa: line \d+: .*3-grams.*truncated"):
        load_lm(cut)
    with pytest.raises(LMError, match=r"noend\.arpa: line \d+: .*without \\end\\"):
        load_lm(noend)
    gz = tmp_path / "corrupt.arpa.gz"
    gz.write_bytes(gzip.compress(text.encode())[:-40])
    with pytest.raises(LMError, match=r"corrupt\.arpa\.gz: corrupt gzip"):
        load_lm(gz)
    first = text.index("\n", text.index("\\2-grams:")) + 1  # the first 2-gram's line
    prob, words, *bow = text[first : text.index("\n", first)].split("\t")
    unknown = tmp_path / "unknown.arpa"
    unknown.write_text(text[:first] + "\t".join([prob, "zebra " + words.split()[1], *bow]) + text[text.index("\n", first):])
    with pytest.raises(LMError, match=rf"unknown\.arpa: line {text[:first].count(chr(10)) + 1}: word 'zebra' is not"):
        load_lm(unknown)
    extra = tmp_path / "extra.arpa"  # a field too many (a back-off and something else)
    extra.write_text(text[:first] + "\t".join([prob, words, "-0.5", "-0.25"]) + text[text.index("\n", first):])
    with pytest.raises(LMError, match=rf"extra\.arpa: line {text[:first].count(chr(10)) + 1}: expected a "
                       r"probability, 2 words and maybe a back-off"):
        load_lm(extra)
    (tmp_path / "bad.arpa").write_text("hello world\n")
    with pytest.raises(LMError, match=r"bad\.arpa: .*ARPA file"):
        load_lm(tmp_path / "bad.arpa")


@native
def test_lexicon_words_missing_from_the_lm_are_reported_once(arpa, caplog):
    lm = load_lm(arpa)
    tokens = ["<blank>", " "] + sorted(set("".join(WORDS)) | {"z"})
    lp = np.log(np.full((1, 3, len(tokens)), 1 / len(tokens), dtype=np.float32))
    lexicon = set(WORDS) | {"zz", "cats"}
    with caplog.at_level(logging.WARNING, logger="asr.decode"):
        beam_search(lp, [3], BeamOptions(beam_size=4), tokens, lm, lexicon)
        beam_search(lp, [3], BeamOptions(beam_size=4, lm_weight=1.0), tokens, lm, lexicon)
    warnings = [r.getMessage() for r in caplog.records if "not in the LM" in r.getMessage()]
    assert len(warnings) == 1
    assert "2 of 14 lexicon words" in warnings[0] and "<unk>" in warnings[0]


@pytest.mark.parametrize("impl", [pytest.param("native", marks=native), "python", "tables"])
def test_an_empty_section_still_counts_as_an_order(tmp_path, monkeypatch, impl):
    path = tmp_path / "empty3.arpa"
    path.write_text("\\data\\\nngram 1=3\nngram 2=1\nngram 3=0\n\n\\1-grams:\n-99\t<s>\t-0.5\n-0.3\ta\t-0.2\n"
                    "-0.4\t</s>\n\n\\2-grams:\n-0.1\t<s> a\n\n\\3-grams:\n\n\\end\\\n")
    if impl == "tables":
        assert lm_table.read_arpa(path).counts() == {1: 3, 2: 1, 3: 0}
        return
    if impl == "python":
        monkeypatch.setattr("asr.decode.lm._native_module", lambda: None)
    lm = load_lm(path)
    assert lm.info()["order"] == 3 and lm.info()["counts"] == [3, 1, 0]
    assert lm.sentence_logprob(["a"]) / math.log(10) == pytest.approx(-0.1 - 0.2 - 0.4)
