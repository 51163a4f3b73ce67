"""What the type checker cannot say by itself, checked in ``make lint`` beside mypy: every parameter
named ``settings`` in production code is annotated (mypy checks calls only against annotations, and
an unannotated ``settings`` lets a caller pass a path, a dict or a home folder unnoticed).

Usage: ``python tests/typing_rules.py [PATH ...]`` (default: the production packages); exit 1 listing
each offence as ``file:line: function(settings)``.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

PACKAGES = ("salesml", "features", "training", "serving", "experiments", "drift", "benchmarks")
TYPED = ("settings",)


def offences(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            for a in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
                if a.arg in TYPED and a.annotation is None:
                    found.append(f"{path}:{a.lineno}: {node.name}({a.arg}) has no type annotation")
    return found


def main(paths: list[str]) -> int:
    root = Path(__file__).resolve().parents[1]
    targets = [Path(p) for p in paths] or [root / p for p in PACKAGES]
    files = sorted(f for t in targets for f in ([t] if t.is_file() else t.rglob("*.py")))
    found = [o for f in files for o in offences(f)]
    for line in found:
        print(line)
    if found:
        print(f"{len(found)} parameter(s) named {', '.join(TYPED)} without a type annotation "
              "(annotate them: `settings: Settings`)")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
