"""Book-scale LM building: streamed inputs, numpy counting, cut-offs, entropy pruning, mixing,
perplexity, and the one-line errors of bad input (asr lm build|mix|ppl)."""

from __future__ import annotations

import gzip
import lzma
import math
import random
from collections import Counter

import numpy as np
import pytest

from asr.cli import main
from asr.decode.lm import arpa_text, parse_arpa
from asr.lm_build import build_lm, estimate
from asr.lm_mix import perplexity, read_text
from asr.lm_table import read_arpa

kenlm = pytest.importorskip("kenlm")
WORDS = "the cat sat on a mat dog ran up hill and down it's".split()
BOOKS = "../shared/data/books_lm/books-lm-norm.txt.xz"


def corpus(n: int = 400, seed: int = 0, words=WORDS) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(words) for _ in range(rng.randint(1, 9))) for _ in range(n)]


def book_lines(n: int) -> list[str]:
    out = []
    with lzma.open(BOOKS, "rt", encoding="utf-8") as f:
        for line in f:
            out.append(line.rstrip("\n"))
            if len(out) == n:
                return out
    return out


@pytest.mark.parametrize("order", [2, 3, 4])
def test_numpy_path_writes_the_dict_path_arpa(tmp_path, order):
    # the same sentences split over a .gz, an .xz and a plain file, upper case (normalised to lower)
    sents = corpus(600, seed=order)
    parts = [sents[:200], sents[200:400], sents[400:]]
    files = [tmp_path / "a.txt.gz", tmp_path / "b.xz", tmp_path / "c.txt"]
    files[0].write_bytes(gzip.compress("\n".join(s.upper() for s in parts[0]).encode()))
    files[1].write_bytes(lzma.compress("\n".join(parts[1]).encode()))
    files[2].write_text("\n".join(parts[2]))
    out = tmp_path / "lm.arpa"
    build_lm(files, out, order)
    assert out.read_text() == arpa_text(estimate(sents, order))
    assert not (tmp_path / "lm.arpa.tmp").exists()


def test_book_text_kenlm_scores_and_vocab(tmp_path):
    lines = book_lines(3000)
    text = tmp_path / "books.txt"
    text.write_text("\n".join(lines) + "\n")
    words = [w for line in lines for w in line.split()]
    vocab = [w for w, _ in Counter(words).most_common(500)]
    (tmp_path / "vocab.txt").write_text("\n".join(vocab) + "\n")
    out = tmp_path / "lm.arpa"
    counts = build_lm(text, out, 3, vocab_path=tmp_path / "vocab.txt")
    model = read_arpa(out)
    assert counts[1] == len({w.lower() for w in vocab} & {w.lower() for w in words}) + 3
    assert all(w == w.lower() for w in model.vocab)  # the books are upper case; LM words are not
    ken = kenlm.Model(str(out))
    dev = read_text(text)[:200]
    ours = perplexity(model, dev)
    total = sum(ken.score(" ".join(s), bos=True, eos=True) for s in dev)
    assert ours["log10_prob"] == pytest.approx(total, rel=1e-6)
    assert ours["oov_rate"] > 0.01  # the vocabulary is small: <unk> is counted and scored


def test_cutoffs_keep_model_normalised_and_loadable(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("\n".join(corpus(800, seed=3)))
    full, cut = tmp_path / "full.arpa", tmp_path / "cut.arpa"
    n_full = build_lm(text, full, 3)
    n_cut = build_lm(text, cut, 3, cutoffs="0,1,1")
    assert n_cut[1] == n_full[1] and n_cut[3] < n_full[3] and n_cut[2] <= n_full[2]
    model = parse_arpa(cut.read_text())
    for g in model[3]:  # every kept trigram's prefix and suffix are listed
        assert g[:2] in model[2] and g[1:] in model[2]
    ken = kenlm.Model(str(cut))
    vocab = WORDS + ["</s>", "<unk>"]
    for context in [["the"], ["the", "cat"], ["on", "a"]]:
        state = kenlm.State()
        ken.BeginSentenceWrite(state)
        for w in context:
            nxt = kenlm.State()
            ken.BaseScore(state, w, nxt)
            state = nxt
        assert sum(10 ** ken.BaseScore(state, w, kenlm.State()) for w in vocab) == pytest.approx(1.0, abs=1e-4)


def test_entropy_pruning_shrinks_with_threshold_and_stays_close(tmp_path):
    lines = book_lines(2200)
    text, dev = tmp_path / "train.txt", tmp_path / "dev.txt"
    text.write_text("\n".join(lines[:2000]))
    dev.write_text("\n".join(lines[2000:]))
    sizes, ppl = [], []
    for t in (0.0, 1e-6, 1e-5):
        out = tmp_path / f"p{t}.arpa"
        counts = build_lm(text, out, 3, prune=t)
        sizes.append(sum(counts.values()))
        model = read_arpa(out)  # prefix-closed, counts in the header right
        ppl.append(perplexity(model, read_text(dev))["ppl"])
        ken = kenlm.Model(str(out))
        s = read_text(dev)[:50]
        assert perplexity(model, s)["log10_prob"] == pytest.approx(
            sum(ken.score(" ".join(x)) for x in s), rel=1e-6)
    assert sizes[0] > sizes[1] > sizes[2]
    assert ppl[0] <= ppl[1] * 1.001 and ppl[1] < ppl[2] < ppl[0] * 1.5


def test_pruning_is_a_no_op_at_zero_gain_threshold(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("\n".join(corpus(300)))
    a, b = tmp_path / "a.arpa", tmp_path / "b.arpa"
    build_lm(text, a, 3)
    build_lm(text, b, 3, prune=1e-30)
    pa, pb = parse_arpa(a.read_text()), parse_arpa(b.read_text())
    assert {n: set(t) for n, t in pa.items()} == {n: set(t) for n, t in pb.items()}
    for n in pa:
        for g, (p, bo) in pa[n].items():
            assert pb[n][g][0] == pytest.approx(p, abs=1e-6) and pb[n][g][1] == pytest.approx(bo, abs=1e-4)


def test_cli_mix_tunes_weights_and_ppl(tmp_path, capsys):
    # two domains: the mixture must beat each model on a dev set drawn from both
    a_words, b_words = WORDS, "ship sea wave sail wind storm the a".split()
    ta, tb, dev = tmp_path / "a.txt", tmp_path / "b.txt", tmp_path / "dev.txt"
    ta.write_text("\n".join(corpus(500, 1, a_words)))
    tb.write_text("\n".join(corpus(500, 2, b_words)))
    dev.write_text("\n".join(corpus(60, 3, a_words) + corpus(20, 4, b_words)))
    la, lb, mixed = tmp_path / "a.arpa", tmp_path / "b.arpa", tmp_path / "mix.arpa"
    assert main(["lm", "build", str(ta), "-o", str(la)]) == 0
    assert main(["lm", "build", str(tb), "-o", str(lb), "--order", "2"]) == 0
    capsys.readouterr()
    assert main(["lm", "mix", str(la), str(lb), "--tune-on", str(dev), "-o", str(mixed)]) == 0
    out = capsys.readouterr().out
    weights = [float(w) for w in out.split("weights (EM on dev perplexity): ")[1].split()[0].split(",")]
    assert weights[0] > weights[1] > 0.05 and sum(weights) == pytest.approx(1.0, abs=1e-3)
    sents = read_text(dev)
    p_mix = perplexity(read_arpa(mixed), sents)["ppl"]
    assert p_mix < perplexity(read_arpa(la), sents)["ppl"] and p_mix < perplexity(read_arpa(lb), sents)["ppl"]
    ken = kenlm.Model(str(mixed))
    assert perplexity(read_arpa(mixed), sents)["log10_prob"] == pytest.approx(
        sum(ken.score(" ".join(s)) for s in sents), rel=1e-6)
    assert main(["lm", "mix", str(la), str(lb), "--weights", "0.5,0.5", "-o", str(tmp_path / "m2.arpa")]) == 0
    assert main(["lm", "ppl", str(la), str(dev)]) == 0
    assert "perplexity" in capsys.readouterr().out


def _bad_inputs(tmp_path):
    good = "\n".join(corpus(50)).encode()
    (tmp_path / "corrupt.xz").write_bytes(lzma.compress(good)[:-40] + b"\0" * 40)
    (tmp_path / "trunc.gz").write_bytes(gzip.compress(good * 20)[:300])
    (tmp_path / "latin1.txt").write_bytes(b"the cat\nsat on the caf\xe9 mat\n")
    (tmp_path / "empty.txt").write_text("\n \n")
    (tmp_path / "dup.vocab").write_text("THE\ncat\nthe\n")
    (tmp_path / "ok.txt").write_bytes(good)
    arpa = arpa_text(estimate(corpus(50), 2))
    (tmp_path / "counts.arpa").write_text(arpa.replace("ngram 2=", "ngram 2=1"))
    (tmp_path / "trunc.arpa").write_text(arpa[: int(len(arpa) * 0.7)])
    return [
        (["lm", "build", "corrupt.xz"], "corrupt.xz"),
        (["lm", "build", "ok.txt", "trunc.gz"], "trunc.gz"),
        (["lm", "build", "latin1.txt"], "latin1.txt:2"),
        (["lm", "build", "empty.txt"], "empty.txt"),
        (["lm", "build", "ok.txt", "--vocab", "dup.vocab"], "dup.vocab:3"),
        (["lm", "ppl", "counts.arpa", "ok.txt"], "counts.arpa:"),
        (["lm", "ppl", "trunc.arpa", "ok.txt"], "trunc.arpa"),
        (["lm", "mix", "counts.arpa", "trunc.arpa", "--weights", "0.5,0.5"], "counts.arpa:"),
    ]


def test_bad_input_one_line_error_and_no_arpa(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for argv, name in _bad_inputs(tmp_path):
        assert main(argv + ([] if argv[1] == "ppl" else ["-o", "out.arpa"])) == 1, argv
        err = capsys.readouterr().err.strip()
        assert err.startswith("asr: error:") and name in err and "\n" not in err, (argv, err)
        assert "Traceback" not in err
        assert not (tmp_path / "out.arpa").exists() and not (tmp_path / "out.arpa.tmp").exists()


def test_max_vocab_maps_rare_words_to_unk(tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("\n".join(corpus(300)) + "\nzebra the cat\n")
    out = tmp_path / "lm.arpa"
    counts = build_lm(text, out, 2, max_vocab=5, lexicon_path=tmp_path / "words.txt")
    assert counts[1] == 5 + 3
    assert len((tmp_path / "words.txt").read_text().split()) == 5
    model = parse_arpa(out.read_text())
    assert ("<unk>", "</s>") in model[2] or ("<unk>",) in model[1]
    assert np.isfinite(model[1][("<unk>",)][0]) and model[1][("<unk>",)][0] > -3
    assert math.isclose(sum(10 ** p for (w,), (p, _) in model[1].items() if w != "<s>"), 1.0, rel_tol=1e-4)


def test_counting_sorts_rows_the_same_packed_or_not():
    from asr.lm_count import unique_rows

    rng = np.random.default_rng(0)
    rows = rng.integers(0, 6, size=(5000, 4)).astype(np.int32)
    counts = rng.integers(1, 4, size=5000)
    packed = unique_rows(rows, counts, 3)  # 12 bits: uint64 keys
    lex = unique_rows(rows, counts, 20)  # 80 bits: np.lexsort
    assert np.array_equal(packed[0], lex[0]) and np.array_equal(packed[1], lex[1])
    assert lex[1].sum() == counts.sum() and len(lex[0]) == len({tuple(r) for r in rows.tolist()})
    assert [tuple(r) for r in lex[0].tolist()] == sorted({tuple(r) for r in rows.tolist()})
