"""Evaluation report files: report.json (machine-readable) and report.md (people)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

from asr.evaluate import EvalResult
from asr.metrics import word_alignment


def report_dict(res: EvalResult, meta: dict) -> dict:
    return {
        "summary": {
            "wer": res.wer,
            "cer": res.cer,
            "words": res.words.to_dict(),
            "chars": res.chars.to_dict(),
            "utterances": len(res.utts),
            "failed": len(res.failed),
            "audio_seconds": res.audio_seconds,
            "decode_seconds": res.decode_seconds,
            "real_time_factor": res.decode_seconds / max(1e-9, res.audio_seconds),
        },
        "meta": meta,
        "failed": [{"id": i, "reason": r} for i, r in res.failed],
        "utterances": [
            dict(asdict(u), alignment=word_alignment(u.ref, u.hyp)) for u in res.utts
        ],
    }


def write_report(res: EvalResult, out_dir: str | Path, meta: dict) -> dict:
    """Write report.json and report.md into ``out_dir``; returns the report dict."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        rep = report_dict(res, dict(meta, created=time.strftime("%Y-%m-%d %H:%M:%S")))
        (out / "report.json").write_text(json.dumps(rep, indent=1, ensure_ascii=False))
        (out / "report.md").write_text(markdown(rep))
    except OSError as e:
        raise OSError(f"cannot write the report into {out}: {e.strerror or e}") from None
    return rep


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
    worst = sorted(rep["utterances"], key=lambda u: (-u["wer"]["errors"], u["id"]))[:20]
    for u in worst:
        if u["wer"]["errors"] == 0:
            break
        lines.append(f"| {u['id']} | {100 * u['wer']['rate']:.0f}% | {u['ref']} | {u['hyp']} |")
    return "\n".join(lines) + "\n"
