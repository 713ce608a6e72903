"""The README's module table names every module of the package (and nothing that is gone)."""

from __future__ import annotations

import fnmatch
import re

from conftest import ROOT


def test_module_table_matches_the_package():
    text = (ROOT / "README.md").read_text()
    table = "\n".join(line for line in text.splitlines() if line.startswith("| "))
    named = set(re.findall(r"`(asr/[^`]+)`", table))
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "asr").glob("*.py") if p.name != "__init__.py"}
    missing = sorted(m for m in modules if not any(fnmatch.fnmatch(m, n) for n in named))
    assert not missing, f"README.md's module table does not name {', '.join(missing)}"
    gone = sorted(n for n in named if not list(ROOT.glob(n)))
    assert not gone, f"README.md's module table names {', '.join(gone)}, which do not exist"
