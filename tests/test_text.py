"""Text normalisation and tokenizers: hand-checked cases, round-trip properties, files, CLI."""

from __future__ import annotations

import io
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from asr.cli import main
from asr.config import TokenizerConfig
from asr.text import (
    CharTokenizer,
    SentencePieceTokenizer,
    TokenizerError,
    load_tokenizer,
    normalize_text,
    save_tokenizer,
    tokenizer_from_dict,
    train_tokenizer,
)

CORPUS = [
    "THE CAT SAT ON THE MAT", "a dog's life, it is!", "Numbers 42 and 7 are fine.",
    "she sells sea shells by the sea shore", "the quick brown fox jumps over the lazy dog",
    "peter piper picked a peck of pickled peppers", "how much wood would a woodchuck chuck",
] * 3


@pytest.mark.parametrize("raw,kw,want", [
    ("Hello,  World! It's   OK.", {}, "hello world it's ok"),
    ("Hello, World", {"lowercase": False}, "Hello World"),
    ("rock-n-roll's", {"keep_chars": "-'"}, "rock-n-roll's"),
    ("rock-n-roll's", {"keep_chars": ""}, "rock n roll s"),
    ("Café NAÏVE", {"strip_accents": True}, "cafe naive"),
    ("Café", {}, "café"),
    ("\uff21\uff22 ﬁ", {}, "ab fi"),  # NFKC: full-width letters, ligature
    ("  \t\n ", {}, ""),
])
def test_normalize_text(raw, kw, want):
    assert normalize_text(raw, **kw) == want


@given(st.text(max_size=60))
def test_normalize_is_idempotent_and_tidy(t):
    n = normalize_text(t)
    assert normalize_text(n) == n
    assert n == n.strip() and "  " not in n


def test_char_tokenizer_by_hand():
    tok = CharTokenizer.train(["ab a", "b"])
    assert tok.vocab == ["<blank>", " ", "a", "b"]
    assert tok.encode("A  b!") == [2, 1, 3]
    assert tok.decode([0, 2, 2, 0, 1, 3, 0]) == "aa b"  # ids, not CTC collapsing
    with pytest.raises(TokenizerError, match="'z'"):
        tok.encode("za")
    assert tok.unknown_chars("zaq") == {"z", "q"}


@given(st.lists(st.text(alphabet="abcdefg' XYZ,.", min_size=1, max_size=30), min_size=1, max_size=8))
def test_char_tokenizer_round_trip(texts):
    tok = CharTokenizer.train(texts)
    for t in texts:
        assert tok.decode(tok.encode(t)) == normalize_text(t)
        assert all(0 < i < len(tok) for i in tok.encode(t))  # 0 is the blank, never a token


@pytest.fixture(scope="module", params=["bpe", "unigram"])
def sp_tok(request) -> SentencePieceTokenizer:
    return SentencePieceTokenizer.train(CORPUS, vocab_size=60, model_type=request.param)


def test_sentencepiece_round_trip_and_blank(sp_tok):
    assert sp_tok.vocab[0] == "<blank>" and len(sp_tok) == sp_tok.sp.get_piece_size() + 1
    for t in CORPUS[:7]:
        ids = sp_tok.encode(t)
        assert ids and 0 not in ids
        assert sp_tok.decode(ids) == normalize_text(t)
    # Multi-character pieces: fewer tokens than characters.
    assert len(sp_tok.encode("the sea shore")) < len("the sea shore")


@settings(max_examples=30, deadline=None)
@given(st.lists(st.sampled_from("the cat sat on a mat dog life sea shore fox".split()), min_size=1,
                max_size=8))
def test_sentencepiece_round_trip_on_new_sentences(words):
    tok = _shared_sp()
    text = " ".join(words)
    assert tok.decode(tok.encode(text)) == text


_SP: list = []


def _shared_sp() -> SentencePieceTokenizer:
    if not _SP:
        _SP.append(SentencePieceTokenizer.train(CORPUS, vocab_size=50, model_type="bpe"))
    return _SP[0]


def test_sentencepiece_rejects_unseen_characters(sp_tok):
    with pytest.raises(TokenizerError, match="ж"):
        sp_tok.encode("the жук")
    assert sp_tok.unknown_chars("the жук") == {"ж", "у", "к"}


@pytest.mark.parametrize("kind", ["char", "sentencepiece"])
def test_tokenizer_survives_a_weights_only_checkpoint_and_a_file(tmp_path, kind):
    cfg = TokenizerConfig(kind=kind, vocab_size=60, sp_model_type="bpe", strip_accents=True)
    tok = train_tokenizer(CORPUS + ["Café"], cfg)
    buf = io.BytesIO()
    torch.save({"tokenizer": tok.to_dict()}, buf)
    buf.seek(0)
    back = tokenizer_from_dict(torch.load(buf, weights_only=True)["tokenizer"])
    path = tmp_path / "tok.json"
    save_tokenizer(tok, path)
    json.loads(path.read_text())  # plain JSON
    for other in (back, load_tokenizer(path)):
        assert other.vocab == tok.vocab and other.strip_accents
        for t in CORPUS[:7] + ["café"]:
            assert other.encode(t) == tok.encode(t)
    # The config can name the file instead of training a new tokenizer.
    loaded = train_tokenizer(["entirely different text"], TokenizerConfig(path=str(path)))
    assert loaded.vocab == tok.vocab


def test_load_tokenizer_errors_name_the_file(tmp_path):
    with pytest.raises(TokenizerError, match="does not exist"):
        load_tokenizer(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{"kind": "char"}')
    with pytest.raises(TokenizerError, match="bad.json"):
        load_tokenizer(bad)


def test_unknown_tokenizer_kind():
    with pytest.raises(ValueError, match="char"):
        train_tokenizer(["a"], TokenizerConfig(kind="wordpiece"))


def test_cli_tokenizer_train(tmp_path, capsys):
    m = tmp_path / "m.jsonl"
    m.write_text("".join(json.dumps({"id": str(i), "audio": "x.wav", "duration": 1.0, "text": t}) + "\n"
                         for i, t in enumerate(CORPUS)))
    out = tmp_path / "bpe.json"
    assert main(["tokenizer", "train", str(m), "--kind", "sentencepiece", "--vocab-size", "50",
                 "--model-type", "bpe", "-o", str(out)]) == 0
    tok = load_tokenizer(out)
    assert tok.kind == "sentencepiece" and len(tok) == 51
    assert "51 tokens" in capsys.readouterr().out
    out2 = tmp_path / "chars.json"
    assert main(["tokenizer", "train", str(m), "--keep-case", "-o", str(out2)]) == 0
    assert "T" in load_tokenizer(out2).vocab
    # validate with the trained tokenizer: text it cannot encode is reported
    m2 = tmp_path / "m2.jsonl"
    m2.write_text(json.dumps({"id": "x", "audio": "x.wav", "duration": 1.0, "text": "über"}) + "\n")
    assert main(["data", "validate", str(m2), "--tokenizer", str(out), "--no-audio"]) == 1
    assert "unencodable-text" in capsys.readouterr().out
    assert main(["tokenizer", "train", str(tmp_path / "missing.jsonl"), "-o", str(out)]) == 1
