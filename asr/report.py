"""Evaluation report files: report.json (machine-readable), report.md and report.html (people).

The HTML page is self-contained (inline CSS and JS from asr/static/report.*, charts as inline
base64 PNGs drawn with matplotlib's Agg backend, no external resource), so it works offline and
can be mailed as one file. Its utterance table (worst first) has a player per utterance (audio
embedded for small reports, linked for large ones: asr.report_audio) and filters by speaker and
by text. Every string that comes from a manifest or a transcript is escaped. Only the fixed
names ``report.json``, ``report.md`` and ``report.html`` are written (each atomically), inside
the run folder; no file name is ever built from an utterance id.
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from asr.evaluate import EvalResult
from asr.metrics import word_alignment
from asr.report_audio import EMBED_MB, Clips, report_clips

DURATION_EDGES = (0.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0)  # seconds; the last bucket is open
TOP_N = 20  # rows in the substitution / deletion / insertion tables
WORST_N = 20  # worst utterances in report.md
LIST_N = 1000  # utterances in the page's table (worst first), each with a player


def _rate(errors: int, ref: int) -> float:
    return errors / ref if ref else (0.0 if errors == 0 else float("inf"))


def _group(utts: list[dict], key) -> list[dict]:
    """WER per group: [{"name", "utterances", "words", "errors", "wer"}], in key order."""
    acc: dict = {}
    for u in utts:
        k = key(u)
        g = acc.setdefault(k, {"name": k, "utterances": 0, "words": 0, "errors": 0})
        g["utterances"] += 1
        g["words"] += u["wer"]["ref"]
        g["errors"] += u["wer"]["errors"]
    out = [dict(g, wer=_rate(g["errors"], g["words"])) for g in acc.values()]
    return out


def _bucket(duration: float) -> str:
    for lo, hi in zip(DURATION_EDGES, DURATION_EDGES[1:]):
        if duration < hi:
            return f"{lo:g}-{hi:g} s"
    return f">= {DURATION_EDGES[-1]:g} s"


def error_tables(utts: list[dict], top: int = TOP_N) -> dict:
    """Most frequent substitution pairs, deleted words and inserted words over all utterances.

    Args:
        utts: report utterances, each with an ``alignment`` list of (op, ref_word, hyp_word).
        top: rows kept per table.

    Returns:
        {"substitutions": [[ref, hyp, count]...], "deletions": [[word, count]...],
         "insertions": [[word, count]...]}, most frequent first.
    """
    subs, dels, ins = Counter(), Counter(), Counter()
    for u in utts:
        for op, r, h in u["alignment"]:
            if op == "substitute":
                subs[(r, h)] += 1
            elif op == "delete":
                dels[r] += 1
            elif op == "insert":
                ins[h] += 1
    return {
        "substitutions": [[r, h, n] for (r, h), n in subs.most_common(top)],
        "deletions": [[w, n] for w, n in dels.most_common(top)],
        "insertions": [[w, n] for w, n in ins.most_common(top)],
    }


def phone_unit_table(units: dict[str, dict[str, int]]) -> list[dict]:
    """A phone model's errors per phone (``EvalResult.phone_units``) as rows, most errors first:
    {"phone", "ref", "sub", "del", "ins", "errors" (sub + del + ins), "rate" (sub + del over ref)}."""
    rows = [{"phone": p, **c, "errors": c["sub"] + c["del"] + c["ins"], "rate": _rate(c["sub"] + c["del"], c["ref"])}
            for p, c in units.items()]
    return sorted(rows, key=lambda r: (-r["errors"], r["phone"]))


def report_dict(res: EvalResult, meta: dict, sources: list | None = None) -> dict:
    """Everything the report shows, as plain data (what report.json holds).

    Args:
        res: the evaluation.
        meta: model, data and options (shown as they are).
        sources: the evaluated ``asr.data.Utterance`` list, for each utterance's "audio" (path)
            and "offset" (seconds into the file for a segment, None for a whole file).
    """
    where = {u.id: u for u in sources or []}
    utts = []
    for r in res.utts:
        u = dict(asdict(r), alignment=word_alignment(r.ref, r.hyp))
        if r.id in where:
            src = where[r.id]
            u.update(audio=src.audio, offset=src.offset if (src.segment or src.offset) else None)
        utts.append(u)
    speakers = sorted(_group(utts, lambda u: u["speaker"] or "(none)"), key=lambda g: g["name"])
    order = {_bucket(lo): i for i, lo in enumerate(DURATION_EDGES)}
    buckets = sorted(_group(utts, lambda u: _bucket(u["duration"])), key=lambda g: order.get(g["name"], 99))
    return {
        "summary": {
            "wer": res.wer,
            "cer": res.cer,
            "words": res.words.to_dict(),
            "chars": res.chars.to_dict(),
            "utterances": len(res.utts),
            "failed": len(res.failed),
            "sentence_error_rate": _rate(sum(u["wer"]["errors"] > 0 for u in utts), len(utts)) if utts else 0.0,
            "audio_seconds": res.audio_seconds,
            "decode_seconds": res.decode_seconds,
            "real_time_factor": res.decode_seconds / max(1e-9, res.audio_seconds),
            **({"per": res.per, "phones": res.phones.to_dict()} if res.phones.ref else {}),
        },
        "meta": meta,
        "speakers": speakers,
        "duration_buckets": buckets,
        "errors": error_tables(utts),
        **({"phone_units": phone_unit_table(res.phone_units)} if res.phone_units else {}),
        "failed": [{"id": i, "reason": r} for i, r in res.failed],
        "utterances": utts,
    }


def write_report(res: EvalResult, out_dir: str | Path, meta: dict, sources: list | None = None,
                 embed_mb: float | None = None, progress: bool = True) -> dict:
    """Write report.json, report.md and report.html into ``out_dir``; returns the report dict.

    Args:
        res, meta, sources: as for :func:`report_dict` (without ``sources`` the page has no audio).
        embed_mb: the page embeds its utterances' audio up to this many MB (None: EMBED_MB),
            else links the files.
        progress: a progress bar while the audio is encoded.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        rep = report_dict(res, dict(meta, created=time.strftime("%Y-%m-%d %H:%M:%S %Z")), sources)
        clips = report_clips(_listed(rep), out, EMBED_MB if embed_mb is None else embed_mb, progress)
        _write_atomic(out / "report.json", json.dumps(rep, indent=1, ensure_ascii=False))
        _write_atomic(out / "report.md", markdown(rep))
        _write_atomic(out / "report.html", to_html(rep, clips))
    except OSError as e:
        raise OSError(f"cannot write the report into {out}: {e.strerror or e}") from None
    return rep


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def read_report(path: str | Path) -> dict:
    """Load a report.json (or the run folder holding one)."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    try:
        rep = json.loads(p.read_text())
    except FileNotFoundError:
        raise ValueError(f"{p}: no such report (give a report.json or the folder holding one)") from None
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{p}: not a readable report.json ({e})") from None
    if not isinstance(rep, dict) or "summary" not in rep or "utterances" not in rep:
        raise ValueError(f"{p}: not an asr evaluation report (no summary/utterances)")
    return rep


def _listed(rep: dict, n: int = LIST_N) -> list[dict]:
    """The utterances the page lists: worst first (most word errors, then highest WER), n at most."""
    return sorted(rep["utterances"], key=lambda u: (-u["wer"]["errors"], -u["wer"]["rate"], u["id"]))[:n]


def _worst(rep: dict, n: int = WORST_N) -> list[dict]:
    return [u for u in _listed(rep, n) if u["wer"]["errors"] > 0]


def markdown(rep: dict) -> str:
    s = rep["summary"]
    lines = [
        "# Evaluation report",
        "",
        "| WER | CER | utterances | failed | words (sub/del/ins) | audio | RTF |",
        "| --- | --- | --- | --- | --- | --- | --- |",
        f"| {100 * s['wer']:.2f}% | {100 * s['cer']:.2f}% | {s['utterances']} | {s['failed']} | "
        f"{s['words']['ref']} ({s['words']['sub']}/{s['words']['del']}/{s['words']['ins']}) | "
        f"{s['audio_seconds'] / 60:.1f} min | {s['real_time_factor']:.4f} |",
        "",
        "## Options",
        "",
        "```",
        json.dumps(rep["meta"], indent=1),
        "```",
        "",
        "## Worst utterances",
        "",
        "| id | WER | reference | hypothesis |",
        "| --- | --- | --- | --- |",
    ]
    for u in _worst(rep):
        lines.append(f"| {u['id']} | {100 * u['wer']['rate']:.0f}% | {u['ref']} | {u['hyp']} |")
    if rep.get("phone_units"):
        lines += ["", f"## Phone errors per phone (greedy phones; PER {100 * s['per']:.2f}%), most errors first", "",
                  "| phone | in reference | substituted | deleted | inserted | error rate (sub + del) |",
                  "| --- | --- | --- | --- | --- | --- |"]
        for r in rep["phone_units"]:
            lines.append(f"| {r['phone']} | {r['ref']} | {r['sub']} | {r['del']} | {r['ins']} | {100 * r['rate']:.1f}% |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- HTML

STATIC = Path(__file__).parent / "static"  # report.css and report.js, inlined into each page


def _e(x) -> str:
    return html.escape(str(x), quote=True)


def _pct(x: float) -> str:
    return "inf" if x == float("inf") else f"{100 * x:.2f}%"


def _chart(groups: list[dict], title: str, xlabel: str) -> str:
    """A bar chart of WER per group as an inline <img> (base64 PNG), or '' without matplotlib."""
    if not groups:
        return ""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return ""
    names = [str(g["name"]) for g in groups]
    vals = [100 * min(g["wer"], 10.0) for g in groups]
    fig, ax = plt.subplots(figsize=(max(4.0, 0.5 * len(names) + 2), 3.0), dpi=100)
    bars = ax.bar(range(len(names)), vals, color="#4c78a8")
    for b, g in zip(bars, groups):
        ax.annotate(f"{g['utterances']}", (b.get_x() + b.get_width() / 2, b.get_height()),
                    ha="center", va="bottom", fontsize=7, color="#555")
    ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 6 else 0, ha="right" if len(names) > 6 else "center",
                  fontsize=8)
    ax.set_ylabel("WER (%)")
    ax.set_xlabel(xlabel)
    ax.set_title(f"{title}\n(labels: utterances per bar)", fontsize=9)
    ax.spines[["top", "right"]].set_visible(False)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<img alt="{_e(title)}" src="data:image/png;base64,{data}">'


def _group_table(groups: list[dict], head: str) -> str:
    rows = "".join(
        f"<tr><td>{_e(g['name'])}</td><td class=n>{g['utterances']}</td><td class=n>{g['words']}</td>"
        f"<td class=n>{g['errors']}</td><td class=n>{_pct(g['wer'])}</td></tr>" for g in groups)
    return (f"<table><tr><th>{_e(head)}</th><th>utterances</th><th>words</th><th>errors</th>"
            f"<th>WER</th></tr>{rows}</table>")


def alignment_html(alignment: list) -> str:
    """Reference over hypothesis, word by word; substitutions, deletions, insertions coloured."""
    cls = {"equal": "", "substitute": "S", "delete": "D", "insert": "I"}
    cells = []
    for op, r, h in alignment:
        r_txt = r if r else "*" * max(1, len(h))
        h_txt = h if h else "*" * max(1, len(r))
        cells.append(f'<div class="w {cls[op]}"><span>{_e(r_txt)}</span><span class=h>{_e(h_txt)}</span></div>')
    return '<div class="al">' + "".join(cells) + "</div>"


def _utterance_table(rep: dict, clips: Clips) -> str:
    """The listed utterances, worst first: filters by speaker and text, a player per row."""
    listed = _listed(rep)
    more = f", the {len(listed)} worst of {len(rep['utterances'])}" if len(listed) < len(rep["utterances"]) else ""
    parts = [f"<h2>Utterances ({len(listed)}{more}, worst first)</h2>",
             f"<p class=note id=audio-note data-mode={clips.mode}>{_e(clips.note)}</p>",
             '<div class=filters><label>speaker <select id=f-speaker><option>all speakers</option></select>'
             '</label><label>text <input id=f-text type=search placeholder="words in the reference or '
             'hypothesis"></label><span id=f-shown class=note></span></div>',
             '<div class=legend>reference above hypothesis: <span class=S>substitution</span>'
             '<span class=D>deletion</span><span class=I>insertion</span></div>',
             "<table id=utts><thead><tr><th>utterance</th><th>speaker</th><th>duration</th><th>errors</th>"
             "<th>reference / hypothesis</th>" + ("<th>audio</th>" if clips.mode != "none" else "")
             + "</tr></thead><tbody>"]
    for u in listed:
        where = ""
        if u.get("audio"):
            seg = f", {u['offset']:.2f}-{u['offset'] + u['duration']:.2f} s" if u.get("offset") is not None else ""
            where = f'<div class=f>{_e(Path(u["audio"]).name)}{seg}</div>'
        if clips.mode == "none":
            player = ""
        elif u["id"] in clips.src:
            player = f'<td><audio controls preload=none src="{_e(clips.src[u["id"]])}"></audio></td>'
        else:
            player = f'<td class=f>{_e(clips.missing.get(u["id"], "no audio"))}</td>'
        parts.append(
            f'<tr data-speaker="{_e(u["speaker"])}" data-ref="{_e(u["ref"])}" data-hyp="{_e(u["hyp"])}">'
            f'<td><span class=id>{_e(u["id"])}</span>{where}</td><td>{_e(u["speaker"])}</td>'
            f'<td class=n>{u["duration"]:.1f} s</td><td class=n>{u["wer"]["errors"]}/{u["wer"]["ref"]}'
            f'<br>{_pct(u["wer"]["rate"])}</td><td>{alignment_html(u["alignment"])}</td>{player}</tr>')
    parts.append("</tbody></table>")
    return "".join(parts)


def to_html(rep: dict, clips: Clips | None = None) -> str:
    """The self-contained HTML page for a report dict, with ``clips`` (asr.report_audio) to play."""
    clips = clips or Clips("none", note="No audio: the page was made without the utterances' audio.")
    s, meta, err = rep["summary"], rep["meta"], rep.get("errors") or error_tables(rep["utterances"])
    w = s["words"]
    title = f"Evaluation: {Path(str(meta.get('model', 'model'))).name} on {Path(str(meta.get('manifest', ''))).name}"
    cards = [("WER", _pct(s["wer"])), ("CER", _pct(s["cer"])),
             ("sentence errors", _pct(s.get("sentence_error_rate", 0.0))),
             ("utterances", f"{s['utterances']}" + (f" ({s['failed']} failed)" if s["failed"] else "")),
             ("audio", f"{s['audio_seconds'] / 60:.1f} min"), ("real-time factor", f"{s['real_time_factor']:.4f}")]
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>{_e(title)}</title><style>{(STATIC / 'report.css').read_text()}</style></head><body>",
        f"<h1>{_e(title)}</h1><div class=m>{_e(meta.get('created', ''))}</div>",
        '<h2>Summary</h2><div class="cards">',
        "".join(f'<div class=card><div class=l>{_e(k)}</div><div class=big>{_e(v)}</div></div>' for k, v in cards),
        "</div>",
        "<table><tr><th></th><th>reference</th><th>substitutions</th><th>deletions</th><th>insertions</th>"
        "<th>errors</th><th>rate</th></tr>",
    ]
    rates = [("words", w), ("characters", s["chars"])] + ([("phones (greedy)", s["phones"])] if "phones" in s else [])
    for name, c in rates:
        parts.append(f"<tr><td>{name}</td><td class=n>{c['ref']}</td><td class=n>{c['sub']}</td>"
                     f"<td class=n>{c['del']}</td><td class=n>{c['ins']}</td><td class=n>{c['errors']}</td>"
                     f"<td class=n>{_pct(c['rate'])}</td></tr>")
    parts.append("</table>")
    speakers, buckets = rep.get("speakers", []), rep.get("duration_buckets", [])
    parts += ["<h2>WER per speaker</h2><div class=grid>", _group_table(speakers, "speaker"),
              _chart(speakers, "WER per speaker", "speaker"), "</div>",
              "<h2>WER by utterance duration</h2><div class=grid>", _group_table(buckets, "duration"),
              _chart(buckets, "WER by utterance duration", "duration"), "</div>"]
    parts.append("<h2>Most frequent errors</h2><div class=grid>")
    parts.append("<table><tr><th>reference</th><th>hypothesis</th><th>count</th></tr>" + "".join(
        f"<tr><td>{_e(r)}</td><td>{_e(h)}</td><td class=n>{n}</td></tr>" for r, h, n in err["substitutions"])
        + "</table>")
    for name, rows in (("deleted word", err["deletions"]), ("inserted word", err["insertions"])):
        parts.append(f"<table><tr><th>{name}</th><th>count</th></tr>" + "".join(
            f"<tr><td>{_e(x)}</td><td class=n>{n}</td></tr>" for x, n in rows) + "</table>")
    parts.append("</div>")
    if rep.get("phone_units"):
        parts.append("<h2>Phone errors per phone (greedy phones), most errors first</h2><table><tr><th>phone</th>"
                     "<th>in reference</th><th>substituted</th><th>deleted</th><th>inserted</th><th>rate</th></tr>"
                     + "".join(f"<tr><td>{_e(r['phone'])}</td><td class=n>{r['ref']}</td><td class=n>{r['sub']}</td>"
                               f"<td class=n>{r['del']}</td><td class=n>{r['ins']}</td><td class=n>{_pct(r['rate'])}</td>"
                               "</tr>" for r in rep["phone_units"]) + "</table>")
    parts.append(_utterance_table(rep, clips))
    if rep.get("failed"):
        parts.append("<h2>Failed utterances</h2><table><tr><th>id</th><th>reason</th></tr>" + "".join(
            f"<tr><td>{_e(f['id'])}</td><td>{_e(f['reason'])}</td></tr>" for f in rep["failed"]) + "</table>")
    parts.append("<h2>Model, data and options</h2><pre>" + _e(json.dumps(meta, indent=1, ensure_ascii=False))
                 + f"</pre><script>{(STATIC / 'report.js').read_text()}</script></body></html>\n")
    return "".join(parts)
