"""The package's layers and which may import which: lower layers never import higher ones.

    common  <-  privacy  <-  client
    common  <-  privacy  <-  server
    common  <-  tasks
    client, server, tasks  <-  simulations  <-  commands  <-  cli

tests/test_layers.py holds every module to this table (the checker below reads imports with ast, running
nothing); benchmarks/code_metrics.py reports against it.
"""

from __future__ import annotations

import ast
from pathlib import Path

ALLOWED: dict[str, frozenset[str]] = {
    "common": frozenset({"common"}),
    "privacy": frozenset({"common", "privacy"}),
    "tasks": frozenset({"common", "tasks"}),
    "client": frozenset({"common", "privacy", "client"}),
    "server": frozenset({"common", "privacy", "server"}),
    "simulations": frozenset({"common", "privacy", "client", "server", "tasks", "simulations"}),
    "commands": frozenset({"common", "privacy", "client", "server", "tasks", "simulations", "commands"}),
    "cli": frozenset({"common", "privacy", "client", "server", "tasks", "simulations", "commands", "cli"}),
}
PACKAGE = "meddiff"
PRODUCT = ("cli.py", "__init__.py", "client", "common", "commands", "privacy", "server", "simulations", "tasks")


def layer_of(module: str) -> str | None:
    """``meddiff.client.trainer`` -> ``client``; ``meddiff.cli`` -> ``cli``; None outside the package's layers."""
    parts = module.split(".")
    if parts[0] != PACKAGE or len(parts) < 2:
        return None
    return parts[1] if parts[1] in ALLOWED else None


def product_files(repo: Path) -> list[Path]:
    files = []
    for entry in PRODUCT:
        path = repo / entry
        files += [path] if path.is_file() else sorted(path.rglob("*.py"))
    return files


def module_name(repo: Path, path: Path) -> str:
    parts = list(path.relative_to(repo).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(["meddiff", *parts])


def imported_modules(tree: ast.AST, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, absolute module) of every import in the file, lazy ones inside functions included."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                root = base[: len(base) - node.level + 1]
                target = ".".join(root + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
    return found


def upward_imports(repo: Path) -> list[str]:
    """Every import, lazy ones included, that reaches a layer its module may not use: 'file:line: ...'."""
    problems = []
    for path in product_files(repo):
        module = module_name(repo, path)
        own = layer_of(module)
        if own is None:
            continue
        tree = ast.parse(path.read_text())
        for line, target in imported_modules(tree, module, path.name == "__init__.py"):
            other = layer_of(target)
            if other is not None and other not in ALLOWED[own]:
                problems.append(f"{path.relative_to(repo)}:{line}: {own} imports {target} ({other})")
    return problems
