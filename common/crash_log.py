"""What an unexpected failure leaves behind: one line for the person at the console, the traceback in a file.

The log goes to ``$MEDDIFF_LOG_DIR`` (default ``~/.cache/meddiff/logs``; the system's temporary folder when that
cannot be written), one file per failure, so a site admin can attach it to a ticket.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import traceback
from pathlib import Path

INPUT_OPTIONS = ("path", "data", "model", "config", "site_config", "scenario", "kspace", "out")


def log_folder() -> Path:
    configured = os.environ.get("MEDDIFF_LOG_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "meddiff" / "logs"


def write_crash_log(args: argparse.Namespace, error: BaseException) -> Path:
    """Write the command line and the traceback; returns the file's path."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    text = (f"meddiff {' '.join(sys.argv[1:])}\nfailed at {stamp}\narguments: {vars(args)}\n\n"
            + "".join(traceback.format_exception(error)))
    for folder in (log_folder(), Path(tempfile.gettempdir()) / "meddiff-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            path = folder / f"crash-{stamp}.log"
            path.write_text(text)
            return path
        except OSError:
            continue
    return Path("(no writable log folder)")


def command_name(args: argparse.Namespace) -> str:
    words = [getattr(args, key, None) for key in ("command", "site_command", "coordinator_command")]
    return " ".join(w for w in words if w)


def inputs(args: argparse.Namespace) -> str:
    """The inputs a command was given (data, model, config ...), as the user typed them."""
    given = [(name, getattr(args, name, None)) for name in INPUT_OPTIONS]
    return ", ".join(f"{'' if name in ('path', 'scenario') else '--' + name.replace('_', '-') + ' '}{value}"
                     for name, value in given if value)


def describe_failure(args: argparse.Namespace, error: BaseException, log_path: Path) -> str:
    reason = (str(error).strip().splitlines() or [""])[0][:300]
    involved = inputs(args)
    return (f"meddiff {command_name(args)}: failed: {type(error).__name__}"
            f"{': ' + reason if reason else ''}"
            f"{' (inputs: ' + involved + ')' if involved else ''}. "
            f"Full traceback in {log_path} (run with -v to print it)")
