"""Word n-gram LMs: modified Kneser-Ney estimation (hand-worked and against kenlm), ARPA reading."""

from __future__ import annotations

import gzip
import json
import math
import random

import pytest

from asr.decode import beam as beam_mod
from asr.decode.lm import LMError, NGramLM, arpa_text, load_lm
from asr.lm_build import build_lm, discounts, estimate

kenlm = pytest.importorskip("kenlm")
WORDS = "the cat sat on a mat dog ran up hill and down".split()


def corpus(n: int = 400, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 8))) for _ in range(n)]


def test_kneser_ney_hand_worked(tmp_path):
    # "a b", "a b", "b"; bigram; too few counts for the formula, so D = (0.5, 1, 1.5).
    # unigram adjusted counts a=1 b=2 </s>=1 (distinct left words); gamma() = (0.5*2 + 1*1)/4 = .5;
    # p(a) = (1-.5)/4 + .5/4 = .25, p(b) = .375, p(</s>) = .25, p(<unk>) = .125 (|V| = 4 with <unk>).
    # p(a|<s>) = (2-1)/3 + gamma(<s>) p(a) with gamma(<s>) = (.5*1 + 1*1)/3 = .5 -> .458333;
    # p(b|a) = (2-1)/2 + .5*.375 = .6875; p(</s>|b) = (3-1.5)/3 + .5*.25 = .625.
    model = estimate(["a b", "a b", "b"], order=2)
    p = {k: 10 ** v[0] for n in model for k, v in model[n].items()}
    assert p[("a",)] == pytest.approx(0.25)
    assert p[("b",)] == pytest.approx(0.375)
    assert p[("<unk>",)] == pytest.approx(0.125)
    assert p[("<s>", "a")] == pytest.approx(1 / 3 + 0.5 * 0.25)
    assert p[("a", "b")] == pytest.approx(0.6875)
    assert p[("b", "</s>")] == pytest.approx(0.625)
    path = tmp_path / "hand.arpa"
    path.write_text(arpa_text(model))
    expected = math.log10((1 / 3 + 0.125) * 0.6875 * 0.625)
    assert kenlm.Model(str(path)).score("a b", bos=True, eos=True) == pytest.approx(expected, abs=1e-5)
    # unseen bigram: back off from "a" (gamma(a) = 1*1/2) to p(a)
    assert NGramLM.from_arpa(path).score(("a",), "a")[0] == pytest.approx(math.log(0.5 * 0.25))


def test_discounts_formula():
    # t1..t4 = 10, 5, 3, 2: Y = 10/20; D1 = 1 - 2*.5*5/10 = .5; D2 = 2 - 3*.5*3/5 = 1.1; D3 = 3 - 4*.5*2/3
    assert discounts({1: 10, 2: 5, 3: 3, 4: 2}, 2) == pytest.approx((0.5, 1.1, 3 - 4 / 3))
    assert discounts({1: 10, 2: 0, 3: 3, 4: 2}, 2) == (0.5, 1.0, 1.5)


@pytest.mark.parametrize("order", [2, 3, 4])
def test_kenlm_scores_our_arpa_identically(tmp_path, order):
    sents = corpus()
    path = tmp_path / f"lm{order}.arpa"
    build_lm_text = tmp_path / "text.txt"
    build_lm_text.write_text("\n".join(sents))
    build_lm(build_lm_text, path, order)
    ken = kenlm.Model(str(path))
    ours = NGramLM.from_arpa(path)
    tests = sents[:40] + ["zebra the cat", "cat cat cat cat", "a", "down up down up hill"]
    for s in tests:
        expected = ken.score(s, bos=True, eos=True)
        assert ours.sentence_logprob(s.split()) / math.log(10) == pytest.approx(expected, abs=1e-4)
        if beam_mod.native_available():
            assert beam_mod._ctcdecode.lm_sentence(ours.native, s.split(), True, True) == pytest.approx(
                expected, abs=1e-4)
        assert ours.sentence_logprob(s.split(), bos=False, eos=False) / math.log(10) == pytest.approx(
            ken.score(s, bos=False, eos=False), abs=1e-4)


@pytest.mark.parametrize("order", [2, 3])
def test_probabilities_sum_to_one(tmp_path, order):
    path = tmp_path / "lm.arpa"
    path.write_text(arpa_text(estimate(corpus(200, seed=1), order)))
    ken = kenlm.Model(str(path))
    vocab = WORDS + ["</s>", "<unk>"]
    for context in [[], ["the"], ["the", "cat"], ["zebra"], ["on", "a"]]:
        state = kenlm.State()
        ken.BeginSentenceWrite(state)
        for w in context:
            out = kenlm.State()
            ken.BaseScore(state, w, out)
            state = out
        total = sum(10 ** ken.BaseScore(state, w, kenlm.State()) for w in vocab)
        assert total == pytest.approx(1.0, abs=1e-4)


def test_read_manifest_and_gzip(tmp_path):
    manifest = tmp_path / "train.jsonl"
    manifest.write_text("".join(json.dumps({"id": str(i), "audio": "x.wav", "duration": 1.0, "text": s.upper() + "!"})
                                + "\n" for i, s in enumerate(corpus(50))))
    arpa, words = tmp_path / "m.arpa", tmp_path / "words.txt"
    counts = build_lm(manifest, arpa, 3, lexicon_path=words)
    assert counts[1] == len(set(" ".join(corpus(50)).split())) + 3  # words + <s> </s> <unk>
    assert set(words.read_text().split()) <= set(WORDS)
    gz = tmp_path / "m.arpa.gz"
    gz.write_bytes(gzip.compress(arpa.read_bytes()))
    assert load_lm(gz).sentence_logprob(["the", "cat"]) == pytest.approx(
        load_lm(arpa).sentence_logprob(["the", "cat"]))


def test_lm_errors_name_the_file(tmp_path):
    with pytest.raises(LMError, match="does not exist"):
        load_lm(tmp_path / "missing.arpa")
    bad = tmp_path / "bad.arpa"
    bad.write_text("hello world\n")
    with pytest.raises(LMError, match="bad.arpa"):
        load_lm(bad)
    broken = tmp_path / "broken.arpa"
    broken.write_text("\\data\\\nngram 1=1\n\n\\1-grams:\n-1.0\n\\end\\\n")
    with pytest.raises(LMError, match="broken.arpa"):
        load_lm(broken)
    with pytest.raises(LMError, match="no sentences"):
        empty = tmp_path / "empty.txt"
        empty.write_text("\n\n")
        build_lm(empty, tmp_path / "x.arpa")


def test_cli_lm_build(tmp_path, capsys):
    from asr.cli import main

    text = tmp_path / "text.txt"
    text.write_text("\n".join(corpus(100)))
    out = tmp_path / "lm.arpa"
    assert main(["lm", "build", str(text), "-o", str(out), "--order", "3"]) == 0
    assert kenlm.Model(str(out)).order == 3
    assert main(["lm", "build", str(tmp_path / "nope.txt"), "-o", str(out)]) == 1
    assert "asr: error:" in capsys.readouterr().err
