"""Markdown table of WER/CER on clean dev vs each degraded copy of it, per decoding mode.

Reads the report.json files a recipe's evaluation stages write into its exp folder:

    EXP/eval-dev-<mode>/report.json            clean dev (stage 4)
    EXP/eval-dev-<kind>-<mode>/report.json     each degraded dev set (stage 5)

(``--clean MODE=FOLDER`` names another clean report: the recipe's beam-lm mode is stage 4's
book-LM decoding, ``eval-dev-beam-booklm-lex`` for a phone model.)

where <kind> is a folder of ``asr data degrade`` (mp3_24, phone, ...) and <mode> is e.g.
greedy or beam-lm. A missing report is shown as "-". For a phone model whose reports carry
per-phone errors (``phone_units``, asr.evaluate), a second table names the phones each degraded
set costs most (the telephone band: nasals and fricatives).

    .venv/bin/python tools/robustness_table.py exp/mini_librispeech --kinds mp3_24 phone \\
        --modes greedy beam-lm -o exp/mini_librispeech/robustness.md
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path


def _report(path: Path) -> dict | None:
    try:
        rep = json.loads((path / "report.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return rep if isinstance(rep, dict) and "summary" in rep else None


def _summary(path: Path) -> dict | None:
    rep = _report(path)
    return rep["summary"] if rep else None


def phone_losses(exp: Path, kinds: list[str], mode: str, clean_dir: str, top: int = 6) -> str:
    """For a phone model: which phones each degraded set costs most, from the per-phone errors
    of the reports (``phone_units``, greedy phones): the ``top`` phones with the most extra errors
    (substitutions + deletions) over clean dev, each with its error rate clean -> degraded and
    its share of the set's extra errors. '' when the clean report has no per-phone errors.
    """
    clean = _report(exp / clean_dir)
    if not clean or not clean.get("phone_units"):
        return ""
    base = {r["phone"]: r for r in clean["phone_units"]}
    lines = ["Phones each set costs most (greedy phones: error rate on clean dev -> on the set, and share of the "
             "set's extra phone errors):", "", "| dev set | phones |", "|---|---|"]
    for kind in kinds:
        rep = _report(exp / f"eval-dev-{kind}-{mode}")
        if not rep or not rep.get("phone_units"):
            continue
        extra = []
        for r in rep["phone_units"]:
            b = base.get(r["phone"])
            if b and r["ref"]:
                extra.append((r["sub"] + r["del"] - b["sub"] - b["del"], r["phone"], b["rate"], r["rate"]))
        total = sum(e for e, *_ in extra if e > 0)
        extra.sort(key=lambda x: (-x[0], x[1]))
        cells = [f"{p} {100 * a:.0f} -> {100 * b:.0f} % ({100 * e / total:.0f} %)" for e, p, a, b in extra[:top]
                 if e > 0 and total]
        lines.append(f"| {kind.replace('_', ':', 1)} | {', '.join(cells) or '-'} |")
    return "\n".join(lines) + "\n" if len(lines) > 4 else ""


def table(exp: Path, kinds: list[str], modes: list[str], clean_dirs: dict[str, str] | None = None) -> str:
    """The markdown table: a row per dev set; per mode WER and CER (and PER first for a phone
    model), each with its ratio to clean dev.

    Args:
        exp: the recipe's exp folder.
        kinds: degraded set folders (``mp3_24``, ...), in row order.
        modes: decoding modes (report folder suffixes), in column order.
        clean_dirs: mode -> the folder (under ``exp``) of its clean-dev report, where that is not
            ``eval-dev-<mode>`` (the recipe's beam-lm mode is stage 4's book-LM decoding).

    Returns:
        markdown text (a table and a one-line legend).
    """
    clean_dirs = clean_dirs or {}
    clean = {m: _summary(exp / clean_dirs.get(m, f"eval-dev-{m}")) for m in modes}
    # a phone model's reports also carry the PER of its greedy phones: the meaningful greedy figure
    keys = {m: ("per", "wer", "cer") if clean[m] and "per" in clean[m] else ("wer", "cer") for m in modes}
    head = "| dev set | " + " | ".join(f"{m} {k.upper()} % | x clean" for m in modes for k in keys[m]) + " |"
    rows = [head, "|" + "---|" * (1 + sum(2 * len(keys[m]) for m in modes))]
    for kind in ["clean", *kinds]:
        cells = [kind if kind == "clean" else kind.replace("_", ":", 1)]
        for m in modes:
            s = clean[m] if kind == "clean" else _summary(exp / f"eval-dev-{kind}-{m}")
            c = clean[m]
            for key in keys[m]:
                if s is None or key not in s:
                    cells += ["-", "-"]
                    continue
                cells.append(f"{100 * s[key]:.2f}")
                cells.append(f"{s[key] / c[key]:.2f}" if c and c[key] > 0 else "-")
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n\nx clean: the error rate divided by the same decoding's on clean dev.\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("exp", type=Path, help="the recipe's exp folder")
    p.add_argument("--kinds", nargs="+", required=True, help="degraded set folders: mp3_24 phone ...")
    p.add_argument("--modes", nargs="+", default=["greedy"], help="decoding modes: greedy beam-lm ...")
    p.add_argument("--clean", action="append", default=[], metavar="MODE=FOLDER",
                   help="the clean-dev report of MODE is EXP/FOLDER/report.json (default EXP/eval-dev-MODE)")
    p.add_argument("--out", "-o", type=Path, help="also write the table here")
    a = p.parse_args(argv)
    kinds = [k.replace(":", "_") for k in a.kinds]
    clean_dirs = {m: f"eval-dev-{m}" for m in a.modes}
    for item in a.clean:
        mode, sep, folder = item.partition("=")
        if not sep or not mode or not folder:
            p.error(f"--clean {item!r}: expected MODE=FOLDER, e.g. beam-lm=eval-dev-beam-booklm-lex")
        clean_dirs[mode] = folder
    missing = [f"{a.exp}/{clean_dirs[m]}/report.json" for m in a.modes if _summary(a.exp / clean_dirs[m]) is None]
    if missing:
        print(f"robustness_table: warning: no clean report {', '.join(missing)} (the recipe's stage 4 writes "
              "it); those columns have no 'x clean'", file=sys.stderr)
    text = table(a.exp, kinds, a.modes, clean_dirs)
    losses = phone_losses(a.exp, kinds, a.modes[0], clean_dirs[a.modes[0]])
    text += f"\n{losses}" if losses else ""
    sys.stdout.write(text)
    if a.out:
        tmp = a.out.with_name(f".{a.out.name}.{os.getpid()}.tmp")
        tmp.write_text(text)
        os.replace(tmp, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
