"""``meddiff demo``: the main job on the built-in data, as a new user first meets it.

Three virtual hospitals (the digital phantom) train one model on the Flower Simulation Engine, then the global
model's samples are checked tissue by tissue against fresh phantom data. Both steps are the real ``simulate`` and
``generate`` sub-commands, parsed by their own argument parsers, so the demo can never drift from them.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..common.console import plain_console, shown_path
from . import generate, simulate


def add_parser(commands) -> None:
    p = commands.add_parser("demo", help="the main job on the built-in phantom: a 3-hospital simulation, "
                                         "then samples of the global model checked tissue by tissue")
    p.add_argument("--out", default="demo_out", help="folder for the run (OUT/phantom) and its samples")
    p.add_argument("--rounds", type=int, help="override the rounds of simulations/scenarios/phantom.toml")
    p.add_argument("--local-steps", type=int, help="override its local steps per round")
    p.add_argument("--samples", type=int, default=64, help="samples drawn from the global model for the check")
    p.add_argument("--sample-steps", type=int, default=50, help="DDIM steps per sample")
    p.set_defaults(func=run)


def parse_subcommand(add_parser, argv: list[str]) -> argparse.Namespace:
    """``argv`` parsed by the sub-command's own parser, exactly as ``meddiff ARGV`` would parse it."""
    parser = argparse.ArgumentParser(prog="meddiff")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(argv)


def simulate_argv(args: argparse.Namespace) -> list[str]:
    run_dir = Path(args.out) / "phantom"
    argv = ["simulate", "--out", str(run_dir), "--sample-every", "2"]  # the default scenario: the phantom
    for flag, value in (("--rounds", args.rounds), ("--local-steps", args.local_steps)):
        if value is not None:
            argv += [flag, str(value)]
    return argv


def run(args: argparse.Namespace) -> int:
    console = plain_console()
    run_dir = Path(args.out) / "phantom"
    console.rule("meddiff demo: 3 virtual hospitals (digital phantom) train one model, then its samples are checked")
    simulated = parse_subcommand(simulate.add_parser, simulate_argv(args))
    code = simulated.func(simulated)
    if code:
        return code
    from ..server.run_store import RunStore

    model = shown_path(RunStore(run_dir).registry()[-1]["path"])
    samples = run_dir / "samples"
    console.rule(f"samples of the global model ({model.name}) against fresh phantom data")
    generated = parse_subcommand(generate.add_parser, [
        "generate", "--model", str(model), "--n", str(args.samples), "--steps", str(args.sample_steps),
        "--out", str(samples)])
    code = generated.func(generated)
    if code:
        return code
    check = json.loads((samples / "generate.json").read_text()).get("phantom_check") or {}
    rows = check.get("rows", [])
    within = sum(bool(r["within"]) for r in rows)
    verdict = "all within tolerance" if rows and within == len(rows) else \
        f"{len(rows) - within} outside tolerance: train longer (--rounds, --local-steps)"
    console.print(f"phantom check: {within} of {len(rows)} statistics within tolerance ({verdict})",
                  style="green" if rows and within == len(rows) else "yellow")
    console.print(f"report {run_dir / 'report.html'}\nglobal model {model}\nsamples {samples / 'grid.png'}",
                  soft_wrap=True)
    return 0
