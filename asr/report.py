"""Evaluation report files: report.json (machine-readable), report.md and report.html (people).

The HTML page is self-contained (inline CSS, charts as inline base64 PNGs drawn with
matplotlib's Agg backend), so it can be mailed or attached as one file. Every string
that comes from a manifest or a transcript is escaped. Only the fixed names
``report.json``, ``report.md`` and ``report.html`` are written, inside the run folder;
no file name is ever built from an utterance id.
"""

from __future__ import annotations

import base64
import html
import io
import json
import time
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from asr.evaluate import EvalResult
from asr.metrics import word_alignment

DURATION_EDGES = (0.0, 2.0, 5.0, 10.0, 15.0, 20.0, 30.0)  # seconds; the last bucket is open
TOP_N = 20  # rows in the substitution / deletion / insertion tables
WORST_N = 30  # worst utterances shown


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


def report_dict(res: EvalResult, meta: dict) -> dict:
    """Everything the report shows, as plain data (what report.json holds)."""
    utts = [dict(asdict(u), alignment=word_alignment(u.ref, u.hyp)) for u in res.utts]
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
        "failed": [{"id": i, "reason": r} for i, r in res.failed],
        "utterances": utts,
    }


def write_report(res: EvalResult, out_dir: str | Path, meta: dict) -> dict:
    """Write report.json, report.md and report.html into ``out_dir``; returns the report dict."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        rep = report_dict(res, dict(meta, created=time.strftime("%Y-%m-%d %H:%M:%S %Z")))
        (out / "report.json").write_text(json.dumps(rep, indent=1, ensure_ascii=False))
        (out / "report.md").write_text(markdown(rep))
        (out / "report.html").write_text(to_html(rep))
    except OSError as e:
        raise OSError(f"cannot write the report into {out}: {e.strerror or e}") from None
    return rep


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


def _worst(rep: dict, n: int = WORST_N) -> list[dict]:
    ranked = sorted(rep["utterances"], key=lambda u: (-u["wer"]["errors"], -u["wer"]["rate"], u["id"]))
    return [u for u in ranked[:n] if u["wer"]["errors"] > 0]


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
    for u in _worst(rep, 20):
        lines.append(f"| {u['id']} | {100 * u['wer']['rate']:.0f}% | {u['ref']} | {u['hyp']} |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1100px;
 color:#222;line-height:1.4;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.25em;margin-top:1.8em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:left}
th{background:#f4f4f4}td.n{text-align:right;font-variant-numeric:tabular-nums}
.big{font-size:1.9em;font-weight:600}.cards{display:flex;gap:1em;flex-wrap:wrap}
.card{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;min-width:9em}.card .l{color:#666;font-size:.85em}
.grid{display:flex;gap:2em;flex-wrap:wrap;align-items:flex-start}
.al{display:flex;flex-wrap:wrap;gap:2px 0;font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em}
.w{display:inline-flex;flex-direction:column;padding:1px 4px;border-radius:3px;margin-right:2px}
.w span{white-space:pre}.w .h{color:#555}
.S{background:#fde2b5}.D{background:#f8c4c4}.I{background:#c8ecc8}
.utt{border:1px solid #e4e4e4;border-radius:6px;padding:.5em .8em;margin:.6em 0}
.utt .id{font-weight:600}.utt .m{color:#666;font-size:.85em}
pre{background:#f7f7f7;padding:.8em;overflow-x:auto;font-size:.85em}
.legend span{padding:1px 6px;border-radius:3px;margin-right:.5em}
"""


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


def to_html(rep: dict) -> str:
    """The self-contained HTML page for a report dict."""
    s, meta, err = rep["summary"], rep["meta"], rep.get("errors") or error_tables(rep["utterances"])
    w = s["words"]
    title = f"Evaluation: {Path(str(meta.get('model', 'model'))).name} on {Path(str(meta.get('manifest', ''))).name}"
    cards = [("WER", _pct(s["wer"])), ("CER", _pct(s["cer"])),
             ("sentence errors", _pct(s.get("sentence_error_rate", 0.0))),
             ("utterances", f"{s['utterances']}" + (f" ({s['failed']} failed)" if s["failed"] else "")),
             ("audio", f"{s['audio_seconds'] / 60:.1f} min"), ("real-time factor", f"{s['real_time_factor']:.4f}")]
    parts = [
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>",
        f"<title>{_e(title)}</title><style>{CSS}</style></head><body>",
        f"<h1>{_e(title)}</h1><div class=m>{_e(meta.get('created', ''))}</div>",
        '<h2>Summary</h2><div class="cards">',
        "".join(f'<div class=card><div class=l>{_e(k)}</div><div class=big>{_e(v)}</div></div>' for k, v in cards),
        "</div>",
        "<table><tr><th></th><th>reference</th><th>substitutions</th><th>deletions</th><th>insertions</th>"
        "<th>errors</th><th>rate</th></tr>",
    ]
    for name, c in (("words", w), ("characters", s["chars"])):
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
    worst = _worst(rep)
    parts.append(f"<h2>Worst utterances ({len(worst)} shown)</h2>")
    parts.append('<div class=legend>reference above hypothesis: <span class=S>substitution</span>'
                 '<span class=D>deletion</span><span class=I>insertion</span></div>')
    for u in worst:
        parts.append(
            f'<div class=utt><span class=id>{_e(u["id"])}</span> <span class=m>speaker {_e(u["speaker"])}, '
            f'{u["duration"]:.1f} s, {u["wer"]["errors"]} errors / {u["wer"]["ref"]} words '
            f'(WER {_pct(u["wer"]["rate"])})</span>{alignment_html(u["alignment"])}</div>')
    if rep.get("failed"):
        parts.append("<h2>Failed utterances</h2><table><tr><th>id</th><th>reason</th></tr>" + "".join(
            f"<tr><td>{_e(f['id'])}</td><td>{_e(f['reason'])}</td></tr>" for f in rep["failed"]) + "</table>")
    parts.append("<h2>Model, data and options</h2><pre>" + _e(json.dumps(meta, indent=1, ensure_ascii=False))
                 + "</pre></body></html>\n")
    return "".join(parts)


# ---------------------------------------------------------------- comparison

def compare_reports(a: dict, b: dict) -> dict:
    """What changed from report A to report B, utterance by utterance.

    Args:
        a, b: report dicts (see :func:`read_report`).

    Returns:
        {"summary": {metric: [a, b]}, "options": {key: [a, b]} for decoding/model keys that
        differ, "changed": [{"id", "ref", "hyp_a", "hyp_b", "errors_a", "errors_b"}] sorted
        worst regression first, "only_a": [ids], "only_b": [ids]}.
    """
    ua = {u["id"]: u for u in a["utterances"]}
    ub = {u["id"]: u for u in b["utterances"]}
    changed = []
    for uid in ua.keys() & ub.keys():
        x, y = ua[uid], ub[uid]
        if x["hyp"] != y["hyp"]:
            changed.append({"id": uid, "ref": y["ref"], "hyp_a": x["hyp"], "hyp_b": y["hyp"],
                            "errors_a": x["wer"]["errors"], "errors_b": y["wer"]["errors"]})
    changed.sort(key=lambda c: (-(c["errors_b"] - c["errors_a"]), c["id"]))
    sa, sb = a["summary"], b["summary"]
    keys = ["wer", "cer", "sentence_error_rate", "utterances", "failed", "real_time_factor"]
    summary = {k: [sa.get(k), sb.get(k)] for k in keys if k in sa or k in sb}
    for k in ("sub", "del", "ins"):
        summary[f"word {k}"] = [sa["words"][k], sb["words"][k]]
    options = {}
    ma, mb = _flat(a.get("meta", {})), _flat(b.get("meta", {}))
    for k in sorted(ma.keys() | mb.keys()):
        if k != "created" and ma.get(k) != mb.get(k):
            options[k] = [ma.get(k), mb.get(k)]
    return {"summary": summary, "options": options, "changed": changed,
            "only_a": sorted(ua.keys() - ub.keys()), "only_b": sorted(ub.keys() - ua.keys())}


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _fmt(v, pct: bool) -> str:
    if v is None:
        return "-"
    if pct:
        return f"{100 * v:.2f}%"
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def _delta(x, y, pct: bool) -> str:
    if x is None or y is None:
        return ""
    if pct:
        return f"{100 * (y - x):+.2f}"
    return f"{y - x:+.4f}" if isinstance(x, float) or isinstance(y, float) else f"{y - x:+d}"


def format_comparison(c: dict, limit: int = 50) -> str:
    """Plain-text rendering of :func:`compare_reports` for the terminal."""
    lines = ["metric                       A            B        change"]
    for k, (x, y) in c["summary"].items():
        pct = k in ("wer", "cer", "sentence_error_rate")
        lines.append(f"{k:<22} {_fmt(x, pct):>12} {_fmt(y, pct):>12} {_delta(x, y, pct):>12}")
    if c["options"]:
        lines += ["", "options that differ:"]
        lines += [f"  {k}: {x!r} -> {y!r}" for k, (x, y) in c["options"].items()]
    worse = sum(ch["errors_b"] > ch["errors_a"] for ch in c["changed"])
    better = sum(ch["errors_b"] < ch["errors_a"] for ch in c["changed"])
    lines += ["", f"{len(c['changed'])} utterances changed: {better} better, {worse} worse, "
              f"{len(c['changed']) - better - worse} different with equal errors"]
    if c["only_a"] or c["only_b"]:
        lines.append(f"{len(c['only_a'])} utterances only in A, {len(c['only_b'])} only in B")
    for ch in c["changed"][:limit]:
        lines += ["", f"{ch['id']}  errors {ch['errors_a']} -> {ch['errors_b']}",
                  f"  REF: {ch['ref']}", f"  A:   {ch['hyp_a']}", f"  B:   {ch['hyp_b']}"]
    if len(c["changed"]) > limit:
        lines.append(f"\n... {len(c['changed']) - limit} more (use --limit)")
    return "\n".join(lines) + "\n"
