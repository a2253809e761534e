"""PACS sync speed: a site's first and second sync of the shared PGBM study (5 series, 120 instances) from a real
Orthanc on loopback, over DICOMweb and over DIMSE, through `meddiff site sync`.

    .venv/bin/python benchmarks/pacs_sync.py                # needs Debian's orthanc and orthanc-dicomweb
    .venv/bin/python benchmarks/pacs_sync.py --data DIR     # another folder of DICOM files

The second sync finds nothing new: its time is the query alone (the baseline a daemon pays before each round).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # tests/client/orthanc.py: the same Orthanc the tests start

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from meddiff.cli import main as meddiff  # noqa: E402


def _sync(config: Path) -> tuple[int, float]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        started = time.perf_counter()
        code = meddiff(["site", "sync", "--config", str(config)])
        seconds = time.perf_counter() - started
    if code:
        raise SystemExit(f"meddiff site sync failed for {config}")
    return int(re.search(r"(\d+) fetched", out.getvalue()).group(1)), seconds


def run(data: Path, folder: Path) -> list[tuple[str, str, int, float]]:
    from tests.client.orthanc import (ORTHANC_AET, OUR_AET, PASSWORD, USER, free_port, missing_reason,
                                      start_orthanc)

    if missing_reason():
        raise SystemExit(missing_reason())
    os.environ.update({"BENCH_PACS_USER": USER, "BENCH_PACS_PASSWORD": PASSWORD})
    server = start_orthanc(folder / "pacs", free_port())
    rows = []
    try:
        server.upload(sorted(p for p in data.rglob("*") if p.is_file()))
        endpoints = {
            "dicomweb": f'url = "{server.dicomweb}"\nusername_env = "BENCH_PACS_USER"\n'
                        'password_env = "BENCH_PACS_PASSWORD"',
            "dimse": f'host = "127.0.0.1"\nport = {server.dicom_port}\ncalled_aet = "{ORTHANC_AET}"\n'
                     f'calling_aet = "{OUR_AET}"'}
        for protocol, endpoint in endpoints.items():
            config = folder / protocol / "site.toml"
            config.parent.mkdir(parents=True)
            config.write_text(f'site_id = "bench"\n[data]\nsource = "{protocol}"\n[pacs]\n{endpoint}\n')
            for which in ("first", "second (nothing new)"):
                rows.append((protocol, which, *_sync(config)))
    finally:
        server.stop()
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "pgbm" / "dicom"),
                        help="a folder of DICOM files to load into the PACS")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        rows = run(Path(args.data), Path(folder))
    table = Table(title="meddiff site sync from Orthanc on loopback")
    for column in ("protocol", "sync", "instances fetched", "seconds"):
        table.add_column(column)
    for protocol, which, fetched, seconds in rows:
        table.add_row(protocol, which, str(fetched), f"{seconds:.1f}")
    Console(width=100).print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
