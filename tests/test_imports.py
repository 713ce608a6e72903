"""The package's import graph has no cycles, and ``asr --help`` stays light (no torch)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

PKG = ROOT / "asr"


def _modules() -> dict[str, Path]:
    """{"asr.cli": asr/cli.py, "asr.decode": asr/decode/__init__.py, ...}"""
    out = {}
    for f in PKG.rglob("*.py"):
        parts = list(f.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = f
    return out


def _is_module(name: str, mods: dict[str, Path]) -> bool:
    """A Python module of the package, or a C++ extension that setup.py builds from <name>.cpp."""
    return name in mods or (ROOT / (name.replace(".", "/") + ".cpp")).is_file()


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of import nodes under ``if TYPE_CHECKING:`` (never run)."""
    skip = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test):
            skip |= {id(x) for b in n.body for x in ast.walk(b)}
    return skip


def import_graph() -> dict[str, set[str]]:
    """Module -> package modules it imports, anywhere in the file (inside functions too:
    a deferred import still runs, and a cycle through one only moves the failure)."""
    mods = _modules()
    graph: dict[str, set[str]] = {}
    for name, f in mods.items():
        tree = ast.parse(f.read_text(), str(f))
        skip = _type_checking_only(tree)
        deps: set[str] = set()
        for n in ast.walk(tree):
            if id(n) in skip:
                continue
            if isinstance(n, ast.Import):
                deps |= {a.name for a in n.names if a.name in mods}
            elif isinstance(n, ast.ImportFrom):
                base = n.module or ""
                if n.level:  # relative: from the package holding this module
                    pkg = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(pkg[: len(pkg) - n.level + 1] + ([base] if base else []))
                for a in n.names:  # `from asr import datatools` imports the module asr.datatools
                    sub = f"{base}.{a.name}"
                    if _is_module(sub, mods):
                        deps |= {sub} & set(mods)
                    elif base in mods:
                        deps.add(base)
        graph[name] = deps - {name}
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_package_has_no_import_cycles():
    graph = import_graph()
    assert {"asr.cli_data", "asr.cli_lm"} <= graph["asr.cli"]  # the walk sees imports at all
    assert "asr.export" in graph["asr.transcribe"]  # ... and deferred ones inside functions
    cycles = find_cycles(graph)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(c) for c in cycles)


def test_find_cycles_finds_a_cycle_through_a_deferred_import(tmp_path):
    assert find_cycles({"asr.a": {"asr.b"}, "asr.b": {"asr.c"}, "asr.c": {"asr.a"}, "asr.d": set()}) == [
        ["asr.a", "asr.b", "asr.c"]]
    assert find_cycles({"asr.a": {"asr.b"}, "asr.b": set()}) == []


_HELP = """
import contextlib, io, sys
from asr.cli import build_parser, main
commands = [[]]
for name, p in build_parser()._subparsers._group_actions[0].choices.items():
    commands.append([name])
    inner = [a for a in p._actions if a.__class__.__name__ == "_SubParsersAction"]
    commands += [[name, n] for n in (inner[0].choices if inner else [])]
for argv in commands:
    with contextlib.redirect_stdout(io.StringIO()) as out:
        try:
            main(argv + ["--help"])
        except SystemExit as e:
            assert e.code == 0, argv
    assert "usage: asr" in out.getvalue(), argv
heavy = sorted(m for m in ("torch", "numpy", "torchaudio", "soundfile", "yaml") if m in sys.modules)
print(len(commands), " ".join(heavy))
"""


def test_help_of_every_command_imports_no_torch():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", _HELP], capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    n, _, heavy = r.stdout.strip().partition(" ")
    assert int(n) >= 15  # asr, its subcommands and theirs
    assert heavy == "", f"asr --help imported {heavy}: import them inside the cmd_* functions"
