"""CTC decoders: hand-worked examples, exhaustive search, C++ == Python reference, LM fusion vs kenlm,
lexicon constraint, properties, batching and threads."""

from __future__ import annotations

import itertools
import math
import os
import random

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asr.decode import BeamOptions, beam_search, greedy_search, prefix_beam_search
from asr.decode import beam as beam_mod
from asr.decode.lm import LN10, NGramLM, arpa_text
from asr.decode.reference import words_of
from asr.errors import ConfigError
from asr.lm_build import estimate

IMPLS = ["native", "python"]
WORDS = "the cat sat on a mat dog ran up hill and down".split()
CHARS = ["<blank>", " "] + sorted(set("".join(WORDS)))
PIECES = ["<blank>", "\u2581the", "\u2581c", "at", "\u2581", "s", "on", "a", "m", "\u2581d", "og", "r", "an",
          "up", "h", "ill", "n", "d", "ow", "\u2581a"]


def require_native() -> None:
    """A C++ search that did not build fails the suite: it is what users run."""
    if not beam_mod.native_available():
        pytest.fail("the C++ beam search (asr/decode/_ctcdecode.cpp) is not built: run "
                    "`python setup.py build_ext --inplace` (or pip install -e .) and read its compiler errors",
                    pytrace=False)


def opts(impl: str, **kw) -> BeamOptions:
    if impl == "native":
        require_native()
    return BeamOptions(implementation=impl, **kw)


def write_word_lm(folder) -> str:
    """A 3-gram ARPA over WORDS from 300 seeded random sentences, written to folder/lm.arpa."""
    rng = random.Random(0)
    sents = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 7))) for _ in range(300)]
    path = folder / "lm.arpa"
    path.write_text(arpa_text(estimate(sents, 3)))
    return str(path)


@pytest.fixture(scope="module")
def lm(tmp_path_factory) -> NGramLM:
    return NGramLM.from_arpa(write_word_lm(tmp_path_factory.mktemp("lm")))


def random_log_probs(rng: np.random.Generator, B: int, T: int, V: int, scale: float = 3.0) -> torch.Tensor:
    return torch.log_softmax(torch.tensor(rng.normal(size=(B, T, V)) * scale, dtype=torch.float32), -1)


# ---- hand-worked examples ------------------------------------------------------------------

# two frames, tokens (blank, a, b), the same distribution (0.5, 0.4, 0.1) at each.
# P("a") = .4*.4 + .4*.5 + .5*.4 = .56, P("") = .25, P("b") = .1*.1 + .1*.5 + .5*.1 = .11,
# P("ab") = P("ba") = .04. The best path is blank-blank, so greedy says "" and beam search "a".
HAND = torch.log(torch.tensor([[[0.5, 0.4, 0.1], [0.5, 0.4, 0.1]]]))


def test_greedy_hand_worked():
    assert greedy_search(HAND, torch.tensor([2])) == [[]]
    lp = torch.log(torch.tensor([[[.1, .9, 0], [.1, .9, 0], [.8, .1, .1], [.1, .9, 0], [.1, 0, .9]]]))
    assert greedy_search(lp, torch.tensor([5])) == [[1, 1, 2]]
    assert greedy_search(lp, torch.tensor([3])) == [[1]]  # only the valid frames count


@pytest.mark.parametrize("impl", IMPLS)
def test_beam_hand_worked(impl):
    hyps = beam_search(HAND, [2], opts(impl, beam_size=10, nbest=5, token_min_logp=-math.inf))[0]
    assert [h.tokens for h in hyps[:3]] == [[1], [], [2]]
    assert [math.exp(h.score) for h in hyps] == pytest.approx([0.56, 0.25, 0.11, 0.04, 0.04])
    assert sorted(map(tuple, (h.tokens for h in hyps[3:]))) == [(1, 2), (2, 1)]


@pytest.mark.parametrize("impl", IMPLS)
def test_beam_hand_worked_with_lexicon(impl):
    # words "a" and "b" separated by a space token: (blank, " ", a, b)
    lp = torch.log(torch.tensor([[[0.1, 0.0, 0.5, 0.4], [0.9, 0.1, 0.0, 0.0], [0.1, 0.0, 0.4, 0.5]]]) + 1e-12)
    free = beam_search(lp, [3], opts(impl, beam_size=8, word_bonus=0.0), ["-", " ", "a", "b"], lexicon=None)[0]
    assert free[0].tokens == [2, 3]  # "ab": one word
    only_b = beam_search(lp, [3], opts(impl, beam_size=8, word_bonus=0.0), ["-", " ", "a", "b"], lexicon={"b"})[0]
    assert only_b[0].words == ["b"]  # "a" is not a word; "ab" is not either


# ---- exhaustive search ---------------------------------------------------------------------

def exhaustive(lp: np.ndarray) -> dict[tuple[int, ...], float]:
    """P(label sequence) summed over every CTC path (tiny inputs only)."""
    T, V = lp.shape
    out: dict[tuple[int, ...], float] = {}
    for path in itertools.product(range(V), repeat=T):
        labels = tuple(k for k, _ in itertools.groupby(path) if k != 0)
        out[labels] = out.get(labels, 0.0) + math.exp(sum(lp[t, k] for t, k in enumerate(path)))
    return out


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=25, deadline=None)
@given(T=st.integers(1, 4), V=st.integers(2, 3), seed=st.integers(0, 10_000))
def test_beam_equals_exhaustive_search(impl, T, V, seed):
    lp = random_log_probs(np.random.default_rng(seed), 1, T, V)
    truth = sorted(exhaustive(lp[0].double().numpy()).items(), key=lambda kv: -kv[1])
    n = len(truth)
    hyps = beam_search(lp, [T], opts(impl, beam_size=n, nbest=n, token_min_logp=-math.inf))[0]
    assert len(hyps) == n
    assert [math.exp(h.score) for h in hyps] == pytest.approx([p for _, p in truth], rel=1e-5)
    best = {tuple(h.tokens) for h in hyps if math.exp(h.score) > truth[0][1] * (1 - 1e-6)}
    assert truth[0][0] in best


# ---- C++ == Python reference -----------------------------------------------------------------

@pytest.mark.parametrize("tokens", [CHARS, PIECES], ids=["chars", "sentencepiece"])
@pytest.mark.parametrize("use_lm,lexicon", [(True, None), (True, "all"), (True, "some"), (False, "all")])
@pytest.mark.parametrize("dense", [True, False], ids=["dense-trie", "hash-trie"])
def test_native_equals_reference(lm, tokens, use_lm, lexicon, dense, monkeypatch):
    require_native()
    monkeypatch.setattr(beam_mod, "DENSE_TRIE_CELLS", 1 << 23 if dense else 0)
    monkeypatch.setattr(beam_mod, "_DECODERS", {})
    lex = {"all": set(WORDS), "some": set(WORDS[:5]), None: None}[lexicon]
    rng = np.random.default_rng(len(tokens) + 7 * dense)
    for trial in range(6):
        lp = random_log_probs(rng, 3, 20, len(tokens))
        lens = [20, 13, 1]
        o = BeamOptions(beam_size=6, nbest=4, token_min_logp=-4.0, lm_weight=0.7, word_bonus=0.3,
                        beam_threshold=8.0 if trial % 2 else 0.0, oov_penalty=-2.0 if trial % 3 else 0.0,
                        token_topk=5 if trial == 4 else 0,
                        lm_lookahead=("context", "unigram", "off")[trial // 2])
        a = beam_search(lp, lens, o, tokens, lm if use_lm else None, lex)
        b = beam_search(lp, lens, BeamOptions(**{**o.__dict__, "implementation": "python"}), tokens,
                        lm if use_lm else None, lex)
        for ha, hb in zip(a, b):
            assert [h.tokens for h in ha] == [h.tokens for h in hb]
            assert [h.score for h in ha] == pytest.approx([h.score for h in hb], abs=1e-9)
            assert [h.lm_score for h in ha] == pytest.approx([h.lm_score for h in hb], abs=1e-9)


# ---- LM fusion -----------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("tokens", [CHARS, PIECES], ids=["chars", "sentencepiece"])
def test_fused_lm_scores_equal_kenlm(lm, impl, tokens):
    kenlm = pytest.importorskip("kenlm")
    model = kenlm.Model(str(lm.path))
    rng = np.random.default_rng(3)
    lp = random_log_probs(rng, 4, 30, len(tokens))
    o = opts(impl, beam_size=8, nbest=3, lm_weight=0.8, word_bonus=0.5, token_min_logp=-5.0)
    checked = 0
    for hyps in beam_search(lp, [30] * 4, o, tokens, lm, set(WORDS)):
        for h in hyps:
            if h.lm_score == 0.0:  # no final word was in the lexicon: the best CTC prefix instead
                continue
            assert all(w in WORDS for w in h.words)
            expected = model.score(" ".join(h.words), bos=True, eos=True) * LN10
            assert h.lm_score == pytest.approx(expected, abs=1e-4)
            assert h.score == pytest.approx(h.ctc_score + 0.8 * h.lm_score + 0.5 * len(h.words), abs=1e-9)
            checked += 1
    assert checked >= 4


def spelled_log_probs(text: str, ambiguous: str, probs: dict[str, float]) -> torch.Tensor:
    """(1, 2*len(text), V) log-probs spelling ``text`` (each char then a blank frame); the frames
    of the character ``ambiguous`` get the distribution ``probs`` instead."""
    idx = {c: i for i, c in enumerate(CHARS)}
    frames = []
    for ch in text:
        p = np.full(len(CHARS), 1e-4)
        if ch == ambiguous:
            for c, v in probs.items():
                p[idx[c]] = v
        else:
            p[idx[ch]] = 0.9
        frames += [p, np.eye(len(CHARS))[0] * 0.9 + 1e-4]
    f = np.array(frames)
    return torch.log(torch.tensor(f / f.sum(1, keepdims=True), dtype=torch.float32))[None]


@pytest.mark.parametrize("impl", IMPLS)
def test_lm_repairs_a_confusion(lm, impl):
    # "the cat" spelled with an ambiguous middle letter: c(a|o)t; the LM knows "cat", not "cot"
    tokens = CHARS
    lp = spelled_log_probs("the cat", "a", {"a": 0.45, "o": 0.55})
    no_lm = beam_search(lp, [lp.shape[1]], opts(impl, beam_size=8), tokens)[0][0]
    assert words_of(no_lm.tokens, tokens) == ["the", "cot"]
    with_lm = beam_search(lp, [lp.shape[1]], opts(impl, beam_size=8, lm_weight=1.0, word_bonus=0.0), tokens, lm)[0][0]
    assert with_lm.words == ["the", "cat"]


@pytest.mark.parametrize("impl", IMPLS)
def test_oov_penalty_prefers_known_words(lm, impl):
    tokens = CHARS
    # "dog" is known; "dag" is not and is slightly more likely acoustically
    lp = spelled_log_probs("dog", "o", {"o": 0.4, "a": 0.6})
    base = dict(beam_size=8, lm_weight=0.0, word_bonus=0.0)
    assert beam_search(lp, [6], opts(impl, **base, oov_penalty=0.0), tokens, lm)[0][0].words == ["dag"]
    assert beam_search(lp, [6], opts(impl, **base, oov_penalty=-2.0), tokens, lm)[0][0].words == ["dog"]


# ---- properties ----------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), T=st.integers(0, 25), beam=st.integers(1, 10), nbest=st.integers(1, 5),
       use_lm=st.booleans(), use_lex=st.booleans(), scale=st.floats(0.1, 8.0))
def test_hypothesis_properties(lm, impl, seed, T, beam, nbest, use_lm, use_lex, scale):
    lp = random_log_probs(np.random.default_rng(seed), 2, max(T, 1), len(CHARS), scale)
    lens = [T, max(T - 3, 0)]
    o = opts(impl, beam_size=beam, nbest=nbest)
    out = beam_search(lp, lens, o, CHARS, lm if use_lm else None, set(WORDS[:6]) if use_lex else None)
    assert len(out) == 2
    for hyps in out:
        assert 1 <= len(hyps) <= nbest
        scores = [h.score for h in hyps]
        assert all(math.isfinite(s) for s in scores)
        assert scores == sorted(scores, reverse=True)
        assert all(0 < t < len(CHARS) for h in hyps for t in h.tokens)
        assert len({tuple(h.tokens) for h in hyps}) == len(hyps)


@pytest.mark.parametrize("impl", IMPLS)
def test_batch_equals_single_and_threads(lm, impl):
    rng = np.random.default_rng(5)
    lp = random_log_probs(rng, 5, 30, len(CHARS), 2.0)
    lens = [30, 12, 0, 29, 5]
    o = opts(impl, beam_size=6, nbest=3)
    batch = beam_search(lp, lens, o, CHARS, lm)
    for b in range(5):
        single = prefix_beam_search(lp[b, : lens[b]], None, o, CHARS, lm)
        assert [h.tokens for h in single] == [h.tokens for h in batch[b]]
        assert [h.score for h in single] == pytest.approx([h.score for h in batch[b]])
    threaded = beam_search(lp, lens, BeamOptions(**{**o.__dict__, "num_workers": 2}), CHARS, lm)
    assert [[h.tokens for h in hs] for hs in threaded] == [[h.tokens for h in hs] for hs in batch]


def test_numpy_input_and_empty_batch():
    lp = HAND.numpy()
    assert beam_search(lp, np.array([2]), BeamOptions(beam_size=4))[0][0].tokens == [1]
    assert beam_search(np.zeros((0, 3, 3), dtype=np.float32), [], BeamOptions()) == []


@pytest.mark.parametrize("kwargs,match", [
    ({"lengths": [3]}, "lengths must lie"),
    ({"lengths": [1, 1]}, "lengths must be"),
    ({"tokens": ["-", "a"]}, "token strings"),
    ({"lexicon": {"a"}}, "tokens are required"),
])
def test_bad_inputs(kwargs, match):
    args = {"lengths": [2], "tokens": None, "lexicon": None, **kwargs}
    with pytest.raises(ValueError, match=match):
        beam_search(HAND, args["lengths"], BeamOptions(), args["tokens"], None, args["lexicon"])


def test_unknown_implementation():
    with pytest.raises(ValueError, match="implementation"):
        beam_search(HAND, [2], BeamOptions(implementation="gpu"))


# ---- tuning --------------------------------------------------------------------------------

def _confusable_vowels():
    """Log-probs of two utterances where the acoustics slightly prefer the wrong vowel."""
    idx = {c: i for i, c in enumerate(CHARS)}
    refs = ["the cat", "a dog ran"]
    confusable = {"a": "o", "o": "a"}
    lps = []
    for text in refs:
        frames = []
        for ch in text:
            p = np.full(len(CHARS), 1e-4)
            if ch in confusable and ch != " ":  # the acoustics slightly prefer the wrong vowel
                p[idx[ch]], p[idx[confusable[ch]]] = 0.45, 0.55
            else:
                p[idx[ch]] = 0.9
            frames += [p, np.eye(len(CHARS))[0] * 0.9 + 1e-4]
        lps.append(np.log(np.array(frames) / np.array(frames).sum(1, keepdims=True)))
    T = max(len(x) for x in lps)
    batch = np.full((2, T, len(CHARS)), -1e4, dtype=np.float32)
    batch[:, :, 0] = 0.0
    for i, x in enumerate(lps):
        batch[i, : len(x)] = x
    return batch, [len(x) for x in lps], refs


def test_grid_search_picks_the_lm_weight_that_fixes_errors(lm, tmp_path):
    from asr.decode.tune import grid_search, tuned_path, write_tuned

    batch, lengths, refs = _confusable_vowels()
    res = grid_search(batch, lengths, refs, CHARS, lm, None,
                      BeamOptions(beam_size=8, oov_penalty=0.0), alphas=[0.0, 1.0], betas=[0.0, 1.0], progress=False)
    by_alpha = {(g["lm_weight"], g["word_bonus"]): g["wer"] for g in res.grid}
    assert by_alpha[(0.0, 0.0)] == pytest.approx(4 / 5)  # "the cot", "o dag ron"
    assert res.lm_weight == 1.0 and res.wer == 0.0
    out = write_tuned(tmp_path / "model.pt", res, {"lm_path": str(lm.path)})
    assert out == tuned_path(tmp_path / "model.pt") == tmp_path / "model.lm.json"
    assert '"lm_weight": 1.0' in out.read_text()


def test_refinement_finds_an_optimum_beyond_the_grid(lm):
    from asr.decode.tune import grid_search

    batch, lengths, refs = _confusable_vowels()
    opts = BeamOptions(beam_size=8, oov_penalty=0.0)
    only_grid = grid_search(batch, lengths, refs, CHARS, lm, None, opts, alphas=[0.0], betas=[0.0],
                            progress=False, refine=False)
    assert only_grid.wer == pytest.approx(4 / 5) and len(only_grid.grid) == 1
    refined = grid_search(batch, lengths, refs, CHARS, lm, None, opts, alphas=[0.0], betas=[0.0], progress=False)
    assert refined.wer == 0.0 and refined.lm_weight > 0  # climbed past the edge of a one-point grid
    assert len(refined.grid) > 1 and min(g["wer"] for g in refined.grid) == refined.wer


def test_native_search_is_built():
    require_native()
    assert beam_mod.native_available()


def test_cli_uses_tuned_weights_for_the_same_lm(tmp_path, capsys):
    import argparse
    import json

    from asr.cli import _decode_overrides

    model, lm_file = tmp_path / "model.pt", tmp_path / "lm.arpa"
    (tmp_path / "model.lm.json").write_text(json.dumps({"lm_weight": 0.7, "word_bonus": 2.0, "lm_path": str(lm_file),
                                                        "lm_lookahead": True}))

    def args(**kw):
        base = dict(model=str(model), method=None, beam_size=None, lm_path=str(lm_file), lm_weight=None,
                    word_bonus=None, lexicon=None)
        return argparse.Namespace(**{**base, **kw})

    assert _decode_overrides(args()) == {"lm_path": str(lm_file), "method": "beam", "lm_weight": 0.7, "word_bonus": 2.0,
                                         "lm_lookahead": "unigram"}  # the search it was tuned for (true: unigram)
    assert "tuned" in capsys.readouterr().err
    assert _decode_overrides(args(lm_weight=0.1))["lm_weight"] == 0.1  # the command line wins
    other = _decode_overrides(args(lm_path=str(tmp_path / "other.arpa")))
    assert "lm_weight" not in other  # tuned for another LM
    assert "lm_weight" not in _decode_overrides(args(lexicon=str(tmp_path / "words.txt")))  # tuned without one
    words = tmp_path / "words.txt"
    (tmp_path / "model.lm.json").write_text(json.dumps({"lm_weight": 0.4, "word_bonus": 1.0, "lm_path": str(lm_file),
                                                        "lexicon": str(words.resolve()), "lm_lookahead": True}))
    assert _decode_overrides(args(lexicon=str(words)))["lm_weight"] == 0.4
    assert "lm_weight" not in _decode_overrides(args())  # tuned with a lexicon, used without
    # a file of before the look-ahead (no key): its weights decode without it, unless another search is asked for
    (tmp_path / "model.lm.json").write_text(json.dumps({"lm_weight": 0.6, "word_bonus": 2.0, "lm_path": str(lm_file)}))
    assert _decode_overrides(args())["lm_lookahead"] == "off"
    capsys.readouterr()
    assert "lm_weight" not in _decode_overrides(args(lm_lookahead="context"))
    assert "tuned with --lm-lookahead off" in capsys.readouterr().err
    (tmp_path / "model.lm.json").write_text(json.dumps({"lm_weight": 0.5, "word_bonus": -1.0, "lm_path": str(lm_file),
                                                        "lm_lookahead": "context"}))
    assert _decode_overrides(args(lm_lookahead="context"))["lm_weight"] == 0.5
    assert "lm_weight" not in _decode_overrides(args(lm_lookahead="unigram"))
    # the LM rewritten after the tuning (e.g. another pruning threshold): used, with a warning to tune again
    capsys.readouterr()
    lm_file.write_text("x")
    os.utime(tmp_path / "model.lm.json", (1_000_000, 1_000_000))
    assert _decode_overrides(args(lm_lookahead="context"))["lm_weight"] == 0.5
    assert "tune again" in capsys.readouterr().err
    os.utime(lm_file, (999_000, 999_000))
    _decode_overrides(args(lm_lookahead="context"))
    assert "tune again" not in capsys.readouterr().err


# ---- LM look-ahead -------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
def test_lm_lookahead_keeps_the_prefix_of_the_likely_word(impl, tmp_path):
    """Words "ab" (LM: 100x likelier) and "cd"; the first frame slightly prefers "c". A beam of one
    without look-ahead keeps "c" and must end in "cd"; with it, "a" carries P(ab) and wins, which
    is also the best-scoring hypothesis of a wide beam."""
    tokens = ["<blank>", " ", "a", "b", "c", "d"]
    (tmp_path / "lm.arpa").write_text("\\data\\\nngram 1=5\n\n\\1-grams:\n-1.0 </s>\n-99 <s> 0\n"
                                      "-0.05 ab 0\n-2.0 cd 0\n-3.0 <unk> 0\n\n\\end\\\n")
    lm = NGramLM.from_arpa(tmp_path / "lm.arpa")
    probs = torch.tensor([[0.01, 0.001, 0.44, 0.001, 0.54, 0.001],
                          [0.01, 0.001, 0.001, 0.49, 0.001, 0.49]])
    lp = torch.log(probs / probs.sum(1, keepdim=True))[None]
    lex = {"ab", "cd"}

    def best(beam: int, lookahead: bool):
        o = opts(impl, beam_size=beam, lm_weight=1.0, word_bonus=0.0, lm_lookahead=lookahead)
        return beam_search(lp, [2], o, tokens, lm, lex)[0][0]

    wide = best(8, False)
    assert wide.words == ["ab"]
    assert best(1, False).words == ["cd"]  # a search error: pruned before the LM could speak
    with_la = best(1, True)
    assert with_la.words == ["ab"] and with_la.score == pytest.approx(wide.score, abs=1e-9)
    assert with_la.lm_score == pytest.approx((-0.05 - 1.0) * LN10)  # the real LM score, not the look-ahead


@pytest.mark.parametrize("impl", IMPLS)
def test_context_lookahead_uses_the_word_history(impl, tmp_path):
    """After "x" the bigram makes "cd" 18x likelier than "ab", which alone is 50x likelier than "cd";
    the frame after "x " slightly prefers "a". A beam of one with the unigram look-ahead keeps "a"
    and ends in "x ab"; the context look-ahead keeps "c" and finds the wide beam's "x cd"."""
    tokens = ["<blank>", " ", "a", "b", "c", "d", "x"]
    (tmp_path / "lm.arpa").write_text(
        "\\data\\\nngram 1=6\nngram 2=2\n\n\\1-grams:\n-1.0 </s>\n-99 <s> 0\n-0.5 x -1.0\n"
        "-0.3 ab 0\n-2.0 cd 0\n-3.0 <unk> 0\n\n\\2-grams:\n-0.1 <s> x\n-0.05 x cd\n\n\\end\\\n")
    lm = NGramLM.from_arpa(tmp_path / "lm.arpa")
    probs = torch.tensor([[0.01, 0.001, 0.001, 0.001, 0.001, 0.001, 0.98],
                          [0.01, 0.98, 0.001, 0.001, 0.001, 0.001, 0.001],
                          [0.01, 0.001, 0.54, 0.001, 0.44, 0.001, 0.001],
                          [0.01, 0.001, 0.001, 0.49, 0.001, 0.49, 0.001]])
    lp = torch.log(probs / probs.sum(1, keepdim=True))[None]
    lex = {"ab", "cd", "x"}

    def best(beam: int, lookahead: str):
        o = opts(impl, beam_size=beam, lm_weight=1.0, word_bonus=0.0, lm_lookahead=lookahead)
        return beam_search(lp, [4], o, tokens, lm, lex)[0][0]

    wide = best(16, "off")
    assert wide.words == ["x", "cd"]
    assert best(1, "unigram").words == ["x", "ab"]  # the unigram look-ahead misleads a narrow beam
    ctx = best(1, "context")
    assert ctx.words == ["x", "cd"] and ctx.score == pytest.approx(wide.score, abs=1e-9)
    assert ctx.lm_score == pytest.approx((-0.1 - 0.05 - 1.0) * LN10)  # the real LM score


def test_old_lookahead_settings_read_as_their_modes():
    from asr.cli_decode import LOOKAHEAD_CHOICES
    from asr.config import LOOKAHEAD_MODES, DecodeConfig

    assert LOOKAHEAD_CHOICES == LOOKAHEAD_MODES  # the CLI's copy (kept light for --help)

    assert DecodeConfig().lm_lookahead == "context"
    assert DecodeConfig(lm_lookahead=True).lm_lookahead == "unigram"  # configs of before the context one
    assert DecodeConfig(lm_lookahead="off").lm_lookahead == "off"
    assert BeamOptions(lm_lookahead=False).lm_lookahead is False  # read as "off" by the search
    with pytest.raises(ConfigError, match="decode.lm_lookahead must be one of context, unigram, off"):
        DecodeConfig(lm_lookahead="bigram")
