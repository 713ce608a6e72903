"""Lexicon decoding of phone models: the pronunciation trie on hand-worked log-probs, several
pronunciations per word, homophones decided by the LM, C++ == Python reference, word times,
and the lexicon reader's errors."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch

from asr.align import word_timestamps
from asr.decode import BeamOptions, beam_search
from asr.decode import beam as beam_mod
from asr.decode.lm import LN10, NGramLM, arpa_text
from asr.lexicon import LexiconError, lexicon_token_ids, merge_lexicons, read_lexicon, write_lexicon
from asr.lm_build import estimate

native = pytest.mark.skipif(not beam_mod.native_available(), reason="C++ beam search not built")
IMPLS = [pytest.param("native", marks=native), "python"]

# ids: 0 blank, 1 word boundary, then the phones sorted (the phone tokenizer's layout)
PHONES = ["<blank>", " ", "AH", "IY", "T", "UW"]
BLANK, SP, AH, IY, T, UW = range(6)
# "to" has two pronunciations; "two" shares the first one with it (homophones)
LEX = {"to": [("T", "UW"), ("T", "AH")], "two": [("T", "UW")], "a": [("AH",)]}
LEX_IDS = lexicon_token_ids(LEX, PHONES)


def opts(impl: str, **kw) -> BeamOptions:
    return BeamOptions(implementation=impl, **kw)


def frames(*probs: dict[int, float]) -> torch.Tensor:
    """(1, T, V) log-probs from per-frame {token: probability} (missing tokens: probability 0)."""
    lp = torch.full((1, len(probs), len(PHONES)), -math.inf)
    for t, p in enumerate(probs):
        for k, v in p.items():
            lp[0, t, k] = math.log(v)
    return lp


def arpa_lm(tmp_path, text: str) -> NGramLM:
    path = tmp_path / "lm.arpa"
    path.write_text(text)
    return NGramLM.from_arpa(path)


# Two frames: T 0.9, blank 0.1, then IY 0.5, UW 0.3, AH 0.2. The best phone string "T IY" is
# no pronunciation. P_ctc("T UW") = .9 * .3 = .27, P_ctc("T AH") = .9 * .2 = .18 and
# P_ctc("AH") = .1 * .2 = .02 (one path each: blank and T have probability 0 in frame 2).
# Without an LM (word_bonus 0) the hypotheses are: "T UW" as "to" and as "two" (ln .27 each,
# "to" first: homophones are ranked by spelling), "T AH" as "to" (ln .18), "AH" as "a" (ln .02);
# "T IY" (.45), "IY" (.05) and "UW" (.03) are no pronunciations.
# Unigram LM, alpha 1: log10 P(two) = -0.5, P(to) = -1.0, P(</s>) = -1.0, so
#   two  (T UW): ln .27 + ln10 * (-0.5 - 1.0) = -1.3093 - 3.4539 = -4.7632
#   to   (T UW): ln .27 + ln10 * (-1.0 - 1.0) = -1.3093 - 4.6052 = -5.9145
#   to   (T AH): ln .18 + ln10 * (-1.0 - 1.0) = -1.7148 - 4.6052 = -6.3200
#   a    (AH):   ln .02 + ln10 * (-2.0 - 1.0) = -3.9120 - 6.9078 = -10.8198
HAND = frames({T: 0.9, BLANK: 0.1}, {IY: 0.5, UW: 0.3, AH: 0.2})
UNIGRAM = """\\data\\
ngram 1=5

\\1-grams:
-1.0 </s>
-99 <s>
-0.5 two
-1.0 to
-2.0 a

\\end\\
"""


@pytest.mark.parametrize("impl", IMPLS)
def test_phone_trie_hand_worked_without_lm(impl):
    free = beam_search(HAND, [2], opts(impl, word_bonus=0.0), PHONES)[0]
    assert free[0].tokens == [T, IY]  # no lexicon: the best phones
    # without an LM "to" and "two" (T UW) score alike: the lexicon's first word stands for both,
    # and the n-best list (the beam) holds distinct phone strings, not copies of one
    hyps = beam_search(HAND, [2], opts(impl, word_bonus=0.0, nbest=3), PHONES, lexicon=LEX_IDS)[0]
    assert [(h.words, h.tokens) for h in hyps] == [(["to"], [T, UW]), (["to"], [T, AH]), (["a"], [AH])]
    assert [h.score for h in hyps] == pytest.approx([math.log(p) for p in (.27, .18, .02)], abs=1e-6)
    # the lexicon's order is its preference: "two" listed first is the one chosen
    two_first = lexicon_token_ids({"two": [("T", "UW")], "to": [("T", "UW"), ("T", "AH")], "a": [("AH",)]}, PHONES)
    hyps = beam_search(HAND, [2], opts(impl, word_bonus=0.0, nbest=2), PHONES, lexicon=two_first)[0]
    assert [h.words for h in hyps] == [["two"], ["to"]]


@pytest.mark.parametrize("impl", IMPLS)
def test_homophones_do_not_crowd_the_beam_without_lm(impl):
    # "T UW | T UW | T UW | AH": each T UW is to/two/too, so 27 word sequences share one phone
    # string and tie without an LM. They used to fill the whole beam of 4 (one phone string, four
    # copies), leaving no room for any other hypothesis: on real dev audio, at beam 16, whole
    # utterances ended stranded in a partial word. Now the beam holds distinct phone strings.
    lex = lexicon_token_ids({"to": [("T", "UW")], "two": [("T", "UW")], "too": [("T", "UW")], "a": [("AH",)]},
                            PHONES)
    word = [{T: 1.0}, {UW: 1.0}, {SP: .6, BLANK: .4}]
    lp = frames(*word, *word, *word, {AH: 1.0})
    hyps = beam_search(lp, [10], opts(impl, word_bonus=0.0, beam_size=4, nbest=4), PHONES, lexicon=lex)[0]
    assert hyps[0].words == ["to", "to", "to", "a"]
    assert hyps[0].score == pytest.approx(3 * math.log(.6))
    assert len({tuple(h.tokens) for h in hyps if h.score > -math.inf}) == sum(h.score > -math.inf for h in hyps)


@pytest.mark.parametrize("impl", IMPLS)
def test_homophones_decided_by_the_lm_hand_worked(impl, tmp_path):
    lm = arpa_lm(tmp_path, UNIGRAM)
    hyps = beam_search(HAND, [2], opts(impl, lm_weight=1.0, word_bonus=0.0, nbest=4), PHONES, lm, LEX_IDS)[0]
    assert [h.words for h in hyps] == [["two"], ["to"], ["to"], ["a"]]
    assert [h.score for h in hyps] == pytest.approx([-4.7632, -5.9145, -6.3200, -10.8198], abs=1e-4)
    assert hyps[0].lm_score == pytest.approx(-1.5 * LN10)


@pytest.mark.parametrize("impl", IMPLS)
def test_homophone_kept_apart_until_the_next_word_decides(impl, tmp_path):
    # "T UW | AH": the unigram prefers "to" over "two", the bigram P(a | two) >> P(a | to); the
    # search must keep "to" and "two" apart after the boundary (same tokens, other LM state).
    bigram = """\\data\\
ngram 1=5
ngram 2=3

\\1-grams:
-1.0 </s>
-99 <s> 0.0
-0.7 to 0.0
-0.9 two 0.0
-1.0 a 0.0

\\2-grams:
-0.1 two a
-3.0 to a
-0.1 a </s>

\\end\\
"""
    lm = arpa_lm(tmp_path, bigram)
    lp = frames({T: 1.0}, {UW: 1.0}, {SP: 1.0}, {AH: 1.0})
    o = opts(impl, lm_weight=1.0, word_bonus=0.0, beam_size=2, nbest=2)
    hyps = beam_search(lp, [4], o, PHONES, lm, LEX_IDS)[0]
    assert [h.words for h in hyps] == [["two", "a"], ["to", "a"]]
    # two a: log10 -0.9 - 0.1 - 0.1; to a: -0.7 - 3.0 - 0.1
    assert [h.lm_score for h in hyps] == pytest.approx([-1.1 * LN10, -3.8 * LN10])
    # one word alone: the unigram decides
    alone = beam_search(lp[:, :2], [2], o, PHONES, lm, LEX_IDS)[0]
    assert alone[0].words == ["to"]


@pytest.mark.parametrize("impl", IMPLS)
def test_several_pronunciations_and_word_list(impl):
    # "T AH | AH": only "to" is pronounced T AH; then "a"
    lp = frames({T: .8, BLANK: .2}, {AH: .6, UW: .4}, {SP: .9, BLANK: .1}, {AH: .7, BLANK: .3})
    best = beam_search(lp, [4], opts(impl, word_bonus=0.0), PHONES, lexicon=LEX_IDS)[0][0]
    assert best.words == ["to", "a"] and best.tokens == [T, AH, SP, AH]
    # with only the pronunciation T UW, the less likely UW is taken (P .8 * .4)
    only_t_uw = lexicon_token_ids({"to": [("T", "UW")]}, PHONES)
    best = beam_search(lp[:, :2], [2], opts(impl, word_bonus=0.0), PHONES, lexicon=only_t_uw)[0][0]
    assert best.words == ["to"] and best.tokens == [T, UW]
    assert best.score == pytest.approx(math.log(.8 * .4))


@native
@pytest.mark.parametrize("use_lm", [True, False])
@pytest.mark.parametrize("dense", [True, False], ids=["dense-trie", "hash-trie"])
def test_native_equals_reference_with_phone_lexicon(use_lm, dense, monkeypatch, tmp_path):
    monkeypatch.setattr(beam_mod, "DENSE_TRIE_CELLS", 1 << 23 if dense else 0)
    monkeypatch.setattr(beam_mod, "_DECODERS", {})
    rng = random.Random(1)
    phones = ["<blank>", " "] + [f"P{i}" for i in range(8)]
    words = [f"w{i}" for i in range(30)]
    lex: dict[str, list[tuple[str, ...]]] = {}
    for w in words:  # 1-3 pronunciations of 1-3 phones; a small phone set makes many homophones
        lex[w] = [tuple(rng.choice(phones[2:]) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 3))]
    ids = lexicon_token_ids(lex, phones)
    assert any(len({w for w, ps in ids.items() if p in ps}) > 1 for p in {p for ps in ids.values() for p in ps})
    sents = [" ".join(rng.choice(words) for _ in range(rng.randint(1, 6))) for _ in range(300)]
    lm = arpa_lm(tmp_path, arpa_text(estimate(sents, 3))) if use_lm else None
    nrng = np.random.default_rng(3 + dense)
    for trial in range(6):
        lp = torch.log_softmax(torch.tensor(nrng.normal(size=(3, 25, len(phones))) * 3, dtype=torch.float32), -1)
        lens = [25, 14, 1]
        o = BeamOptions(beam_size=8, nbest=5, token_min_logp=-5.0, lm_weight=0.8, word_bonus=0.4,
                        beam_threshold=9.0 if trial % 2 else 0.0, token_topk=4 if trial == 4 else 0,
                        lm_lookahead=("context", "unigram", "off")[trial // 2])
        a = beam_search(lp, lens, o, phones, lm, ids)
        b = beam_search(lp, lens, BeamOptions(**{**o.__dict__, "implementation": "python"}), phones, lm, ids)
        for ha, hb in zip(a, b):
            assert [(h.tokens, h.words) for h in ha] == [(h.tokens, h.words) for h in hb]
            assert [h.score for h in ha] == pytest.approx([h.score for h in hb], abs=1e-9)
            assert [h.lm_score for h in ha] == pytest.approx([h.lm_score for h in hb], abs=1e-9)
            for h in ha:  # every word's tokens between boundaries are one of its pronunciations
                groups = [tuple(g) for g in _split(h.tokens, 1) if g]
                assert len(groups) == len(h.words) or h is ha[0]
                for w, g in zip(h.words, groups):
                    assert g in ids[w]
        # threads give the same answer
        c = beam_search(lp, lens, BeamOptions(**{**o.__dict__, "num_workers": 3}), phones, lm, ids)
        assert [[(h.tokens, h.words, h.score) for h in hs] for hs in c] == \
            [[(h.tokens, h.words, h.score) for h in hs] for hs in a]


def _split(ids: list[int], sep: int) -> list[list[int]]:
    out: list[list[int]] = [[]]
    for i in ids:
        if i == sep:
            out.append([])
        else:
            out[-1].append(i)
    return out


def test_word_times_from_the_phone_alignment():
    # frames: T UW _ | AH _ (0.5 s each): "two" on frames 0-1, "a" on frame 3
    lp = torch.full((6, len(PHONES)), -10.0)
    for t, k in enumerate([T, UW, BLANK, SP, AH, BLANK]):
        lp[t, k] = 0.0
    words = word_timestamps(lp, [T, UW, SP, AH], PHONES, 0.5, words=["two", "a"])
    assert [(w.word, w.start, w.end) for w in words] == [("two", 0.0, 1.0), ("a", 2.0, 2.5)]
    # without the decoded words (greedy output), a word reads as its phones
    phones = word_timestamps(lp, [T, UW, SP, AH], PHONES, 0.5, joiner=" ")
    assert [w.word for w in phones] == ["T UW", "AH"]


# ---- lexicon files -------------------------------------------------------------------------

def test_read_write_lexicon_round_trip(tmp_path):
    path = tmp_path / "lexicon.txt"
    path.write_text("# a comment\nTO T UW1\nto t ah\ntwo T UW\n\nTO(2) T UW0\nread R IY D\nread R EH D\n")
    with pytest.raises(LexiconError, match=r"lexicon.txt:3: word 'to': unknown phoneme 't'"):
        read_lexicon(path, units={"T", "UW", "AH", "R", "IY", "EH", "D"}, normalize=str.lower)
    path.write_text("# a comment\nTO T UW1\nto T AH\ntwo T UW\n\nTO(2) T UW0\nread R IY D\nread R EH D\n")
    lex = read_lexicon(path, units={"T", "UW", "AH", "R", "IY", "EH", "D"}, normalize=str.lower)
    assert lex == {"to": [("T", "UW"), ("T", "AH")], "two": [("T", "UW")],
                   "read": [("R", "IY", "D"), ("R", "EH", "D")]}
    write_lexicon(lex, tmp_path / "out.txt")
    assert read_lexicon(tmp_path / "out.txt", units={"T", "UW", "AH", "R", "IY", "EH", "D"}) == lex
    assert not list(tmp_path.glob("*.tmp"))
    assert merge_lexicons({"to": [("T", "UW")]}, {"to": [("T", "AH"), ("T", "UW")], "a": [("AH",)]}) == \
        {"to": [("T", "UW"), ("T", "AH")], "a": [("AH",)]}


def test_word_list_is_a_lexicon_for_spelling_models(tmp_path):
    path = tmp_path / "words.txt"
    path.write_text("cat\ndog D AO G\n")
    assert read_lexicon(path) == {"cat": [], "dog": [("D", "AO", "G")]}


@pytest.mark.parametrize("text,match", [
    ("to T UW\ncat\n", r"words.txt:2: word 'cat' has no phonemes"),
    ("to T UW\ncat K AE XX\n", r"words.txt:2: word 'cat': unknown phoneme 'XX'"),
    ("# only a comment\n", r"words.txt: the lexicon has no words"),
])
def test_bad_lexicon_lines_name_the_line(tmp_path, text, match):
    path = tmp_path / "words.txt"
    path.write_text(text)
    with pytest.raises(LexiconError, match=match):
        read_lexicon(path, units={"T", "UW", "K", "AE"})


def test_bad_lexicon_files(tmp_path):
    with pytest.raises(LexiconError, match="does not exist"):
        read_lexicon(tmp_path / "missing.txt")
    (tmp_path / "bad.txt").write_bytes(b"to T UW\n\xff\xfe\n")
    with pytest.raises(LexiconError, match=r"bad.txt:2: not UTF-8"):
        read_lexicon(tmp_path / "bad.txt")
    with pytest.raises(LexiconError, match=r"word 'cat': unknown phoneme 'K'"):
        lexicon_token_ids({"cat": [("K", "AE", "T")]}, PHONES)
    with pytest.raises(ValueError, match=r"lexicon word 'to': token id 1 is not a unit"):
        beam_search(HAND, [2], BeamOptions(), PHONES, lexicon={"to": [(T, SP)]})


# ---- phone models in transcribe / evaluate / the CLI (a stand-in until PhoneTokenizer lands) --

class StandInPhoneTokenizer:
    """What asr/h3_phones.md asks of the phone tokenizer: kind, units, lexicon, encode, decode."""

    kind = "phone"

    def __init__(self, lexicon: dict[str, list[tuple[str, ...]]]):
        self.units = PHONES[2:]
        self.lexicon = lexicon

    def token_strings(self) -> list[str]:
        return list(PHONES)

    def normalize(self, text: str) -> str:
        from asr.text import normalize_text

        return normalize_text(text)

    def encode(self, text: str) -> list[int]:
        from asr.text import TokenizerError

        ids: list[int] = []
        for w in self.normalize(text).split():
            if w not in self.lexicon:
                raise TokenizerError(f"no pronunciation for {w!r}")
            ids += ([SP] if ids else []) + [PHONES.index(p) for p in self.lexicon[w][0]]
        return ids

    def decode(self, ids: list[int]) -> str:
        return " ".join(PHONES[i] if i != SP else "|" for i in ids if i != BLANK)


# 8 output frames: T UW _ | AH _ _ _ ("two a" / "to a")
TWO_A = [T, UW, BLANK, SP, AH, BLANK, BLANK, BLANK]


def phone_model(lexicon, tmp_path, **decode):
    import dataclasses

    from asr.config import Config
    from asr.transcribe import Model

    def net(wavs, lens):
        lp = torch.full((wavs.shape[0], len(TWO_A), len(PHONES)), -8.0)
        for t, k in enumerate(TWO_A):
            lp[:, t, k] = -0.01
        return torch.log_softmax(lp, -1), torch.full((wavs.shape[0],), len(TWO_A))

    cfg = Config()
    cfg = dataclasses.replace(cfg, decode=dataclasses.replace(cfg.decode, **decode))
    return Model(net, cfg, StandInPhoneTokenizer(lexicon), tmp_path / "phones.pt")


def test_phone_model_greedy_prints_phones_and_beam_prints_words(tmp_path):
    import soundfile as sf

    wav = np.zeros(16000, dtype=np.float32)
    model = phone_model({"two": [("T", "UW")], "a": [("AH",)]}, tmp_path)
    assert model.transcribe(wav).text == "T UW | AH"
    model = model.with_decoding(method="beam")
    t = model.transcribe(wav, timestamps=True)
    assert t.text == "two a" and t.phones == "T UW AH"
    assert [w["word"] for w in t.words] == ["two", "a"]
    assert t.words[0]["end"] <= t.words[1]["start"]
    # --lexicon FILE adds words to the checkpoint's: "to" (T UW) is now a homophone of "two",
    # and an LM that prefers it decides
    (tmp_path / "more.txt").write_text("to T UW\n")
    (tmp_path / "lm.arpa").write_text(UNIGRAM.replace("-0.5 two", "-3.0 two"))
    model = model.with_decoding(lexicon=str(tmp_path / "more.txt"), lm_path=str(tmp_path / "lm.arpa"))
    assert model.transcribe(wav).text == "to a"
    # evaluate: WER from the lexicon decoding, PER from greedy
    from asr.data import Utterance
    from asr.evaluate import evaluate

    sf.write(tmp_path / "u.wav", wav, 16000)
    utts = [Utterance("u1", str(tmp_path / "u.wav"), 1.0, "To a!"),
            Utterance("u2", str(tmp_path / "u.wav"), 1.0, "to to")]
    greedy = phone_model({"to": [("T", "UW")], "a": [("AH",)]}, tmp_path)  # method greedy
    res = evaluate(greedy, utts, progress=False)
    assert res.options.method == "beam"  # switched: a phone model's words need the lexicon
    assert greedy.options.method == "greedy"  # ...in a copy: the caller's model is unchanged
    assert [(u.ref, u.hyp) for u in res.utts] == [("to a", "to a"), ("to to", "to a")]
    assert (res.words.ref, res.words.errors) == (4, 1)
    # phones: T UW AH vs T UW AH (3, no error); T UW T UW vs T UW AH (4: 1 substitution, 1 deletion)
    assert (res.phones.ref, res.phones.errors) == (7, 2) and res.per == pytest.approx(2 / 7)
    assert [u.per["ref"] for u in res.utts] == [3, 4]
    # ...and per phone: the same 7 reference phones and 2 errors, each on a phone of u2's second "to"
    units = res.phone_units
    assert {p: c["ref"] for p, c in units.items()} == {"T": 3, "UW": 3, "AH": 1}
    assert sum(c["sub"] + c["del"] for c in units.values()) == 2 and sum(c["ins"] for c in units.values()) == 0
    assert units["AH"]["sub"] == units["AH"]["del"] == 0
    from asr.report import markdown, report_dict

    rep = report_dict(res, {})
    assert [r["phone"] for r in rep["phone_units"]][-1] == "AH" and rep["phone_units"][0]["errors"] >= 1
    assert "| AH | 1 | 0 | 0 | 0 | 0.0% |" in markdown(rep)
    from asr.report import to_html

    page = to_html(rep)
    assert "<td>phones (greedy)</td><td class=n>7</td>" in page and "Phone errors per phone" in page
    assert "<tr><td>AH</td><td class=n>1</td><td class=n>0</td>" in page


def test_evaluate_names_reference_words_the_lexicon_lacks(tmp_path, caplog):
    import soundfile as sf

    from asr.data import Utterance
    from asr.evaluate import evaluate

    sf.write(tmp_path / "u.wav", np.zeros(16000, dtype=np.float32), 16000)
    model = phone_model({"to": [("T", "UW")], "a": [("AH",)]}, tmp_path, method="beam")
    utts = [Utterance("u1", str(tmp_path / "u.wav"), 1.0, "tea tea a"),
            Utterance("u2", str(tmp_path / "u.wav"), 1.0, "to a")]
    res = evaluate(model, utts, progress=False)
    assert "2 reference words (1 distinct, most frequent: 'tea') are not in the lexicon" in caplog.text
    assert len(res.utts) == 2 and res.words.ref == 5 and res.phones.ref == 3  # u1 has no reference phones


def test_phone_model_without_lexicon_says_it_needs_one(tmp_path):
    model = phone_model({}, tmp_path, method="beam")
    with pytest.raises(LexiconError, match=r"phones.pt: this phone model has no lexicon .* --lexicon FILE"):
        model.prepare_decoding()
    model = model.with_decoding(method="greedy")  # greedy needs none
    assert model.transcribe(np.zeros(16000, dtype=np.float32)).text == "T UW | AH"
    # a word-list line for a phone model names the file and line
    (tmp_path / "words.txt").write_text("two T UW\na\n")
    with pytest.raises(LexiconError, match=r"words.txt:2: word 'a' has no phonemes"):
        model.with_decoding(method="beam", lexicon=str(tmp_path / "words.txt"))  # checked when set


def test_cli_reports_a_phone_model_without_lexicon(tmp_path, monkeypatch, capsys):
    import soundfile as sf

    import asr.transcribe
    from asr.cli import main

    sf.write(tmp_path / "a.wav", np.zeros(16000, dtype=np.float32), 16000)
    monkeypatch.setattr(asr.transcribe, "load_model", lambda *a, **k: phone_model({}, tmp_path))
    assert main(["transcribe", "--model", str(tmp_path / "phones.pt"), "--method", "beam",
                 str(tmp_path / "a.wav")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "asr: error:" in err and "has no lexicon" in err
    assert main(["transcribe", "--model", str(tmp_path / "phones.pt"), str(tmp_path / "a.wav")]) == 0
    assert capsys.readouterr().out.strip() == "T UW | AH"
