"""Evaluation reports: counts that add up, a safe self-contained HTML page, and comparisons."""

from __future__ import annotations

import json

from asr.evaluate import EvalResult, UttResult
from asr.metrics import char_errors, word_errors
from asr.report import compare_reports, error_tables, format_comparison, read_report, write_report


def result(rows: list[tuple[str, str, str, float, str]]) -> EvalResult:
    """EvalResult from (id, speaker, reference, duration, hypothesis) rows."""
    res = EvalResult()
    for uid, spk, ref, dur, hyp in rows:
        we, ce = word_errors(ref, hyp), char_errors(ref, hyp)
        res.words += we
        res.chars += ce
        res.audio_seconds += dur
        res.utts.append(UttResult(uid, spk, dur, ref, hyp, we.to_dict(), ce.to_dict()))
    res.decode_seconds = 1.0
    return res


ROWS = [
    ("u1", "alice", "the cat sat", 1.5, "the bat sat"),
    ("u2", "alice", "on the mat", 3.0, "on mat"),
    ("u3", "bob", "a dog", 12.0, "a dog barked"),
    ("../../evil<script>alert(1)</script>", "<b>mallory</b>", "x < y & z", 25.0, "x > y"),
]


def test_report_counts_add_up(tmp_path):
    rep = write_report(result(ROWS), tmp_path / "run", {"model": "m.pt", "manifest": "t.jsonl"})
    s = rep["summary"]
    assert (s["words"]["sub"], s["words"]["del"], s["words"]["ins"], s["words"]["ref"]) == (2, 3, 1, 13)
    assert abs(s["wer"] - 6 / 13) < 1e-9
    per_spk = {g["name"]: (g["errors"], g["words"]) for g in rep["speakers"]}
    assert per_spk == {"alice": (2, 6), "bob": (1, 2), "<b>mallory</b>": (3, 5)}
    buckets = {g["name"]: g["utterances"] for g in rep["duration_buckets"]}
    assert buckets == {"0-2 s": 1, "2-5 s": 1, "10-15 s": 1, "20-30 s": 1}
    u2 = next(u for u in rep["utterances"] if u["id"] == "u2")
    assert [tuple(a) for a in u2["alignment"]] == [("equal", "on", "on"), ("delete", "the", ""),
                                                   ("equal", "mat", "mat")]
    assert json.loads((tmp_path / "run" / "report.json").read_text())["summary"]["wer"] == s["wer"]


def test_error_tables():
    utts = [{"alignment": [("substitute", "cat", "bat"), ("delete", "the", ""), ("insert", "", "uh")]},
            {"alignment": [("substitute", "cat", "bat"), ("delete", "the", ""), ("equal", "a", "a")]}]
    t = error_tables(utts)
    assert t == {"substitutions": [["cat", "bat", 2]], "deletions": [["the", 2]], "insertions": [["uh", 1]]}


def test_html_is_self_contained_escaped_and_stays_in_the_run_folder(tmp_path):
    out = tmp_path / "a" / "run"
    write_report(result(ROWS), out, {"model": "m.pt", "manifest": "<t>.jsonl"})
    assert sorted(p.name for p in tmp_path.rglob("*") if p.is_file()) == [
        "report.html", "report.json", "report.md"]
    assert {p.parent for p in tmp_path.rglob("*") if p.is_file()} == {out}
    page = (out / "report.html").read_text()
    assert "<script" not in page and "&lt;script&gt;" in page and "&lt;b&gt;mallory" in page
    assert '<div class="w S"><span>&lt;</span><span class=h>&gt;</span></div>' in page
    assert '<div class="w D"><span>&amp;</span>' in page
    assert "data:image/png;base64," in page  # charts are inline
    assert "src=\"http" not in page and "href=\"http" not in page and "<link" not in page
    for section in ("WER per speaker", "WER by utterance duration", "Most frequent errors",
                    "Worst utterances", "Model, data and options"):
        assert section in page
    # substitution "cat"->"bat" is shown coloured, reference above hypothesis
    assert '<div class="w S"><span>cat</span><span class=h>bat</span></div>' in page


def test_compare_reports(tmp_path):
    a = write_report(result(ROWS), tmp_path / "a", {"model": "m.pt", "decode": {"method": "greedy"}})
    rows_b = [ROWS[0][:4] + ("the cat sat",), ROWS[1][:4] + ("on the hat",)] + ROWS[2:]
    write_report(result(rows_b), tmp_path / "b", {"model": "m.pt", "decode": {"method": "beam"}})
    c = compare_reports(read_report(tmp_path / "a"), read_report(tmp_path / "b" / "report.json"))
    # worst change first: u2 is no better, u1 improved
    assert [(x["id"], x["errors_a"], x["errors_b"]) for x in c["changed"]] == [("u2", 1, 1), ("u1", 1, 0)]
    assert c["options"] == {"decode.method": ["greedy", "beam"]}
    assert c["summary"]["wer"][0] == a["summary"]["wer"]
    text = format_comparison(c)
    assert "2 utterances changed: 1 better, 0 worse" in text and "decode.method" in text


def test_cli_evaluate_and_compare(tiny_digits_model, digits_manifest, tmp_path, capsys):
    from asr.cli import main

    m = digits_manifest(4, name="test", index_range=range(0, 5))
    for method in ("greedy", "beam"):
        rc = main(["evaluate", "-m", str(tiny_digits_model), "--manifest", str(m), "--method", method,
                   "--beam-size", "4", "--out", str(tmp_path / method)])
        assert rc == 0
        rep = json.loads((tmp_path / method / "report.json").read_text())
        assert rep["summary"]["utterances"] == 4
        assert rep["meta"]["decode"]["method"] == method
        assert len(rep["meta"]["model_file"]["sha256"]) == 16
        assert (tmp_path / method / "report.html").stat().st_size > 5000
    capsys.readouterr()
    assert main(["compare", str(tmp_path / "greedy"), str(tmp_path / "beam")]) == 0
    assert "decode.method: 'greedy' -> 'beam'" in capsys.readouterr().out
    assert main(["compare", str(tmp_path / "greedy"), str(tmp_path / "nothing")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("asr: error:") and "nothing" in err


def test_evaluate_skips_only_the_utterance_that_breaks_the_model(tiny_digits_model, digits_manifest):
    from asr.data import read_manifest
    from asr.evaluate import evaluate
    from asr.transcribe import load_model

    model = load_model(tiny_digits_model)
    utts = read_manifest(digits_manifest(4, name="test", index_range=range(0, 5)))
    clean = evaluate(model, utts, progress=False)
    bad_id = utts[2].id
    bad_len = round(utts[2].duration * model.sample_rate)
    real = model.transcribe_batch

    def breaks_on_one(wavs):  # e.g. a decoder bug or out-of-memory triggered by one utterance
        if any(abs(w.size - bad_len) <= 1 for w in wavs):
            raise RuntimeError("boom")
        return real(wavs)

    model.transcribe_batch = breaks_on_one
    res = evaluate(model, utts, progress=False)
    assert res.failed == [(bad_id, "RuntimeError: boom")]
    assert [u.id for u in res.utts] == [u.id for u in clean.utts if u.id != bad_id]
    assert {u.id: u.hyp for u in res.utts} == {u.id: u.hyp for u in clean.utts if u.id != bad_id}
