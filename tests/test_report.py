"""Evaluation reports: counts that add up, a safe self-contained HTML page, and comparisons."""

from __future__ import annotations

import base64
import io
import json
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import soundfile as sf
from conftest import chromium, fsdd_file, make_digit_utterance

from asr.audio import load_audio
from asr.compare import compare_reports, format_comparison
from asr.data import Utterance
from asr.evaluate import EvalResult, UttResult
from asr.metrics import char_errors, word_errors
from asr.report import error_tables, read_report, write_report


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
    assert page.count("<script") == 1 and "&lt;script&gt;" in page and "&lt;b&gt;mallory" in page
    assert page.count("</script>") == 1 and "getElementById(\"utts\")" in page  # only our filters
    assert '<div class="w S"><span>&lt;</span><span class=h>&gt;</span></div>' in page
    assert '<div class="w D"><span>&amp;</span>' in page
    assert "data:image/png;base64," in page  # charts are inline
    assert "src=\"http" not in page and "href=\"http" not in page and "<link" not in page
    for section in ("WER per speaker", "WER by utterance duration", "Most frequent errors",
                    "Utterances (4, worst first)", "Model, data and options"):
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
                   "--beam-size", "4", "--out" if method == "greedy" else "-o", str(tmp_path / method)])
        assert rc == 0
        rep = json.loads((tmp_path / method / "report.json").read_text())
        assert rep["summary"]["utterances"] == 4
        assert rep["meta"]["decode"]["method"] == method
        assert len(rep["meta"]["model_file"]["sha256"]) == 16
        page = _Page((tmp_path / method / "report.html").read_text())
        assert page.note == "embedded" and len(page.rows) == 4
        assert all(r["src"].startswith("data:audio/ogg;base64,") for r in page.rows)  # each one playable
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


# ---------------------------------------------------------------- audio and filters

class _Page(HTMLParser):
    """The utterance table's rows (attributes, id, player src) and the audio note of a report.html."""

    def __init__(self, text: str):
        super().__init__()
        self.rows, self.note, self._in_id = [], None, False
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-speaker" in a:
            self.rows.append(dict(a, src=None, id=""))
        elif tag == "audio" and self.rows:
            self.rows[-1]["src"] = a["src"]
        elif tag == "span" and a.get("class") == "id" and self.rows:
            self._in_id = True
        elif tag == "p" and a.get("id") == "audio-note":
            self.note = a["data-mode"]

    def handle_data(self, data):
        if self._in_id:
            self.rows[-1]["id"] += data

    def handle_endtag(self, tag):
        self._in_id = False


def audio_report(tmp_path: Path, embed_mb: float, missing: bool = False) -> tuple[Path, dict]:
    """A report over real FSDD audio: two whole files (speakers jackson, theo) and a segment of a
    longer file (the middle digit of 8-6-3); returns (report folder, {id: Utterance})."""
    long = tmp_path / "audio" / "eight six three.wav"  # a space: links must be URL-quoted
    long.parent.mkdir(parents=True)
    make_digit_utterance(long, [8, 6, 3], sr_out=16000)
    six = sf.info(fsdd_file(6)).duration
    offset = 0.1 + sf.info(fsdd_file(8)).duration + 0.15  # where make_digit_utterance put the six
    utts = [Utterance("a1", str(fsdd_file(8)), sf.info(fsdd_file(8)).duration, "eight", "jackson"),
            Utterance("a2", str(fsdd_file(3, "theo")), sf.info(fsdd_file(3, "theo")).duration, "three", "theo"),
            Utterance("s1", str(long), six, "six", "jackson", offset=offset, segment=True)]
    if missing:
        utts.append(Utterance("m1", str(tmp_path / "gone.flac"), 1.0, "two", "theo"))
    hyps = {"a1": "eight", "a2": "tree", "s1": "six six six", "m1": "two"}
    res = result([(u.id, u.speaker, u.text, u.duration, hyps[u.id]) for u in utts])
    out = tmp_path / "run"
    write_report(res, out, {"model": "m.pt", "manifest": "t.jsonl"}, sources=utts, embed_mb=embed_mb,
                 progress=False)
    return out, {u.id: u for u in utts}


def test_small_report_embeds_only_each_segment_as_ogg(tmp_path):
    out, utts = audio_report(tmp_path, embed_mb=20, missing=True)
    page = _Page((out / "report.html").read_text())
    assert page.note == "embedded"
    assert [r["id"] for r in page.rows] == ["s1", "a2", "a1", "m1"]  # worst first
    rows = {r["id"]: r for r in page.rows}
    assert [(r["data-speaker"], r["data-ref"], r["data-hyp"]) for r in page.rows] == [
        ("jackson", "six", "six six six"), ("theo", "three", "tree"), ("jackson", "eight", "eight"), ("theo", "two", "two")]
    assert rows["m1"]["src"] is None and "gone.flac: file does not exist" in (out / "report.html").read_text()
    for uid in ("a1", "a2", "s1"):
        src = rows[uid]["src"]
        assert src.startswith("data:audio/ogg;base64,")
        wav, sr = sf.read(io.BytesIO(base64.b64decode(src.split(",", 1)[1])), dtype="float32")
        u = utts[uid]
        assert sr == 16000 and abs(wav.size / sr - u.duration) < 0.02, (uid, wav.size / sr, u.duration)
        # the clip is the utterance's own segment: it matches the source there (Vorbis is lossy)
        orig = load_audio(u.audio, 16000, u.offset, u.duration)
        n = min(orig.size, wav.size)
        assert np.corrcoef(orig[:n], wav[:n])[0, 1] > 0.9, uid
    rep = json.loads((out / "report.json").read_text())
    assert {u["id"]: u["offset"] for u in rep["utterances"]} == {"a1": None, "a2": None, "s1": utts["s1"].offset,
                                                                "m1": None}


def test_large_report_links_files_relative_with_the_segment_as_media_fragment(tmp_path, monkeypatch):
    import asr.report_audio

    # embedding off; over the limit by the estimate; under by the estimate but over once encoded
    for embed_mb, plan in ((0, None), (0.001, None), (0.01, 1)):
        if plan:
            monkeypatch.setattr(asr.report_audio, "PLAN_BYTES_PER_S", plan)
        out, utts = audio_report(tmp_path / str(embed_mb), embed_mb=embed_mb)
        text = (out / "report.html").read_text()
        page = _Page(text)
        assert page.note == "linked" and "data:audio" not in text
        assert ("embedding is off" in text) == (embed_mb == 0) and (f"more than the {embed_mb:g} MB limit" in text) == (embed_mb > 0)
        rows = {r["id"]: r for r in page.rows}
        for uid, u in utts.items():
            path, _, frag = rows[uid]["src"].partition("#")
            assert not path.startswith(("/", "file:"))  # relative to the report
            assert (out / urllib.parse.unquote(path)).resolve() == Path(u.audio).resolve()
            assert frag == ("" if uid != "s1" else f"t={u.offset:.3f},{u.offset + u.duration:.3f}")
        assert "%20" in rows["s1"]["src"]


def test_report_without_audio_paths_has_no_players(tmp_path):
    write_report(result(ROWS), tmp_path, {"model": "m.pt"}, progress=False)
    page = _Page((tmp_path / "report.html").read_text())
    assert page.note == "none" and len(page.rows) == 4 and all(r["src"] is None for r in page.rows)


def test_report_page_plays_and_filters_in_chromium(tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select, WebDriverWait

    embedded, utts = audio_report(tmp_path / "small", embed_mb=20)
    linked, _ = audio_report(tmp_path / "large", embed_mb=0)
    d = chromium(tmp_path / "chromium-profile")
    player = ("const a = Array.from(document.querySelectorAll('#utts tbody tr'))"
              ".find(tr => tr.querySelector('.id').textContent === arguments[0]).querySelector('audio');")
    load = player + "a.preload = 'auto'; a.load();"
    state = player + "return [a.readyState, a.duration, a.currentTime, a.error && a.error.message];"
    try:
        d.set_page_load_timeout(60)
        for out, row in ((embedded, "a2"), (linked, "s1"), (embedded, "s1")):
            d.get((out / "report.html").as_uri())
            d.execute_script(load, row)
            WebDriverWait(d, 30).until(lambda d, r=row: (lambda s: s[0] >= 1 or s[3])(d.execute_script(state, r)))
            ready, duration, now, err = d.execute_script(state, row)
            assert err is None and ready >= 1 and duration > 0, (out, row, err)
            u = utts[row]
            if out == linked:  # the whole file, played from the segment's start
                assert duration > u.offset + u.duration - 0.05 and abs(now - u.offset) < 0.05, (duration, now)
            else:  # only the segment was embedded
                assert abs(duration - u.duration) < 0.05 and now == 0
        # filters (on the embedded page): speaker, then text in the hypothesis, then in the reference
        rows = {r.find_element(By.CSS_SELECTOR, ".id").text: r for r in d.find_elements(By.CSS_SELECTOR, "#utts tbody tr")}
        visible = lambda: sorted(k for k, r in rows.items() if r.is_displayed())  # noqa: E731
        assert visible() == ["a1", "a2", "s1"]
        speaker = Select(d.find_element(By.ID, "f-speaker"))
        assert [o.text for o in speaker.options] == ["all speakers", "jackson (2)", "theo (1)"]
        speaker.select_by_visible_text("theo (1)")
        assert visible() == ["a2"] and d.find_element(By.ID, "f-shown").text == "1 of 3 shown"
        speaker.select_by_index(0)
        box = d.find_element(By.ID, "f-text")
        box.send_keys("SIX S")  # matches the hypothesis "six six six" only, case-insensitively
        assert visible() == ["s1"]
        box.clear()
        box.send_keys("thr")  # the reference "three" (its hypothesis is "tree")
        assert visible() == ["a2"]
        box.clear()
        box.send_keys("zz")
        assert visible() == [] and d.find_element(By.ID, "f-shown").text == "0 of 3 shown"
        speaker.select_by_visible_text("jackson (2)")
        box.clear()
        box.send_keys(" ")  # an empty search after clear() fires no input event: reset with a space
        assert visible() == ["a1", "s1"]
        errors = [m for m in d.get_log("browser") if m["level"] == "SEVERE"]
        assert not errors, errors
    finally:
        d.quit()
