"""The code's shape in numbers, for the redesign's before/after table (issue 21):

    python benchmarks/code_metrics.py [--repo DIR]

Lines per package, the ten longest functions, modules over 300 lines, functions over 50 lines, imports that
point up a layer (common/layers.py), config dataclasses (frozen dataclasses whose name ends in Config, Settings,
Spec or Section), and ``__dict__[`` state. Reads the source as text (ast); runs nothing.
"""

from __future__ import annotations

import argparse
import ast
import sys
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO.parent))
from meddiff.common.layers import product_files, upward_imports  # noqa: E402
CONFIG_SUFFIXES = ("Config", "Settings", "Spec", "Section")


def functions(repo: Path) -> list[tuple[int, str]]:
    out = []
    for path in product_files(repo):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((node.end_lineno - node.lineno + 1, f"{path.relative_to(repo)}:{node.lineno} {node.name}"))
    return sorted(out, reverse=True)


def config_classes(repo: Path, frozen_only: bool = False) -> list[str]:
    """Dataclasses named like settings (Config, Settings, Spec, Section); or every frozen dataclass."""
    out = []
    for path in product_files(repo):
        for node in ast.walk(ast.parse(path.read_text())):
            decorators = [ast.unparse(d) for d in getattr(node, "decorator_list", [])]
            if not isinstance(node, ast.ClassDef) or not any("dataclass" in d for d in decorators):
                continue
            if (frozen_only and any("frozen=True" in d for d in decorators)) or (
                    not frozen_only and node.name.endswith(CONFIG_SUFFIXES)):
                out.append(f"{path.relative_to(repo)} {node.name}")
    return out


def report(repo: Path) -> str:
    lines_per_package: Counter = Counter()
    long_modules = []
    for path in product_files(repo):
        count = len(path.read_text().splitlines())
        top = path.relative_to(repo).parts[0]
        lines_per_package[top.removesuffix(".py")] += count
        if count > 300:
            long_modules.append(f"{path.relative_to(repo)} ({count})")
    funcs = functions(repo)
    upward = upward_imports(repo)
    configs = config_classes(repo)
    state = [f"{p.relative_to(repo)}" for p in product_files(repo) if "__dict__[" in p.read_text()
             or "__dict__.setdefault" in p.read_text()]
    rows = ["| measure | value |", "| --- | --- |"]
    rows += [f"| lines in {name}/ | {n} |" for name, n in sorted(lines_per_package.items())]
    rows.append(f"| lines in the product | {sum(lines_per_package.values())} |")
    rows.append(f"| modules over 300 lines | {len(long_modules)}: {', '.join(long_modules) or '-'} |")
    over = [f for f in funcs if f[0] > 50]
    rows.append(f"| functions over 50 lines | {len(over)} |")
    rows += [f"| longest function {i + 1} | {n} lines: {where} |" for i, (n, where) in enumerate(funcs[:10])]
    rows.append(f"| upward imports | {len(upward)} |")
    rows += [f"| upward import | {u} |" for u in upward]
    rows.append(f"| config dataclasses | {len(configs)}: {', '.join(c.split()[1] for c in configs)} |")
    frozen = config_classes(repo, frozen_only=True)
    rows.append(f"| frozen dataclasses | {len(frozen)} in {len({f.split()[0] for f in frozen})} modules |")
    rows.append(f"| modules keeping state in __dict__ | {len(state)}: {', '.join(state) or '-'} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repo", default=str(REPO), help="the checkout to measure (default: this one)")
    args = parser.parse_args(argv)
    print(report(Path(args.repo).resolve()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
