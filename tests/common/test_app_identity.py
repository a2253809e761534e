"""The code hash a site pins covers every file of meddiff that a federated round runs, at the site and at the
coordinator: a module the ClientApp, the site worker or the ServerApp imports outside SOURCE_FOLDERS could change
what a site does with its data without changing the hash."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from meddiff.common.app_identity import PACKAGE_ROOT, SOURCE_FOLDERS

ROUND_MODULES = ("meddiff.client.deploy_app", "meddiff.client.site_worker", "meddiff.client.local_runner",
                 "meddiff.server.deploy_app", "meddiff.privacy.dp_sgd")


def test_every_module_a_round_runs_is_in_the_hash():
    code = (f"import importlib, json, sys\nfor m in {ROUND_MODULES!r}: importlib.import_module(m)\n"
            "print(json.dumps(sorted(getattr(m, '__file__', None) or '' for n, m in sys.modules.items() "
            "if n == 'meddiff' or n.startswith('meddiff.'))))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    files = [Path(f) for f in json.loads(out.stdout) if f]
    folders = {str(f.parent.relative_to(PACKAGE_ROOT)) for f in files if f.name != "__init__.py"}
    assert folders and folders <= set(SOURCE_FOLDERS), sorted(folders - set(SOURCE_FOLDERS))
