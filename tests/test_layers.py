"""Layers point down only (common/layers.py): no module imports from a layer above its own, lazy imports inside
functions included; the measure is the one benchmarks/code_metrics.py reports."""

from __future__ import annotations

import ast

from meddiff.common.layers import imported_modules, product_files, upward_imports
from tests.conftest import REPO


def test_no_module_imports_from_a_layer_above_its_own():
    assert upward_imports(REPO) == []


def test_the_checker_sees_relative_lazy_and_absolute_imports():
    source = ("from ...client.trainer import X\nimport meddiff.server.settings\n"
              "def f():\n    from ...cli import main\n    from .. import schema\n")
    found = [target for _, target in imported_modules(ast.parse(source), "meddiff.common.data.x", False)]
    assert found == ["meddiff.client.trainer", "meddiff.server.settings", "meddiff.cli", "meddiff.common"]


def test_every_product_module_is_in_a_layer():
    from meddiff.common.layers import ALLOWED

    tops = {path.relative_to(REPO).parts[0].removesuffix(".py") for path in product_files(REPO)}
    assert tops - {"__init__"} <= set(ALLOWED)
