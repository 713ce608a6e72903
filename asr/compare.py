"""What changed between two evaluation reports (``asr compare``), utterance by utterance.

Reads only the report dicts (``asr.report.read_report`` loads them): summary metrics side by
side, the decoding and model options that differ, and each utterance whose hypothesis changed.
"""

from __future__ import annotations


def compare_reports(a: dict, b: dict) -> dict:
    """What changed from report A to report B, utterance by utterance.

    Args:
        a, b: report dicts (see :func:`asr.report.read_report`).

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
