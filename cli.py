"""The one console command, ``meddiff``: site admins, coordinators and researchers start everything here.

This module only builds the parser and is the error boundary: a mistake the user can fix (data, config,
checkpoint) ends in one line and exit code 2; anything unexpected ends in one line naming what failed and the
input involved, exit code 1, and the full traceback in a log file whose path is printed (``-v`` prints it too).
No traceback reaches a user otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys

from . import __version__
from .common.errors import CheckpointError
from .common.config import ConfigError
from .common.crash_log import describe_failure, write_crash_log
from .common.data.problems import DataError

log = logging.getLogger("meddiff")


def build_parser() -> argparse.ArgumentParser:
    from .commands import (bench, budget, demo, denoise, deploy, detect_anomalies, generate, phantom, plan,
                           reconstruct, segment, simulate, site_admin, site_check, site_pacs, super_resolve, train,
                           train_autoencoder, translate)

    parser = argparse.ArgumentParser(prog="meddiff", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", action="version", version=f"meddiff {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details, and print tracebacks")
    commands = parser.add_subparsers(dest="command", required=True)
    site = commands.add_parser("site", help="site admin commands").add_subparsers(dest="site_command", required=True)
    site_check.add_parser(site)
    phantom.add_parser(commands)
    demo.add_parser(commands)
    deploy.add_parsers(commands, site)
    budget.add_parser(site)
    site_admin.add_parsers(site)
    site_pacs.add_parser(site)
    for module in (plan, train, train_autoencoder, generate, detect_anomalies, denoise, super_resolve, reconstruct, segment, translate,
                   simulate, bench):
        module.add_parser(commands)
    return parser


def _run(args: argparse.Namespace) -> int:
    if getattr(args, "model", "") is None:  # a task command without --model: the site's newest global model
        from .commands.task_io import newest_site_model

        args.model = str(newest_site_model(getattr(args, "config", None) or getattr(args, "site_config", None)))
    return args.func(args)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except (DataError, ConfigError, CheckpointError) as e:
        print(f"meddiff: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("meddiff: interrupted; nothing after the last saved step was kept", file=sys.stderr)
        return 130
    except Exception as e:  # the error boundary: one line for the user, the traceback in a file
        path = write_crash_log(args, e)
        print(describe_failure(args, e, path), file=sys.stderr)
        if args.verbose:
            import traceback

            traceback.print_exception(e, file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
