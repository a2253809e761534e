"""The federation's comparators: one model trained on the scenario's sites pooled (centralised), or on one site alone.

    .venv/bin/python benchmarks/quality_train.py SCENARIO.toml --sites all --steps 1500 --out RUN
    .venv/bin/python benchmarks/quality_train.py SCENARIO.toml --sites 1 --steps 1500 --out RUN

The examples are exactly the virtual hospitals' training examples of `meddiff simulate SCENARIO` (same split,
channel skew, scanner shift and held-out part: simulations/scenario.site_partitions), the network and training
recipe are the scenario's [model] and [train]. Give --steps = sites x rounds x local steps for the same total
number of optimiser steps (of the same batch size) as the federated run. With --early-stopping P the steps are a
cap: training stops when the loss on the same sites' held-out examples has not improved for P evaluations (every
--eval-every steps), and the model kept is the best one. Writes RUN/model.pt and RUN/train.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, replace
from pathlib import Path

import torch

from meddiff.common.training.early_stopping import Plateau, train_until_plateau
from meddiff.common.training.trainer import Trainer
from meddiff.common.data.tensors import TrainingTensors
from meddiff.simulations.scenario import load_scenario, site_partitions


def pooled(parts: list[TrainingTensors]) -> TrainingTensors:
    """The sites' training tensors as one set (channels a site lacks stay marked unavailable)."""
    return TrainingTensors(parts[0].schema, torch.cat([p.images for p in parts]),
                           torch.cat([p.available for p in parts]), torch.cat([p.labels for p in parts]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", help="scenario TOML (as given to meddiff simulate)")
    parser.add_argument("--sites", default="all", help="'all' (pooled, centralised) or one site index")
    parser.add_argument("--steps", type=int, required=True, help="optimiser steps")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, help="training seed (default: the scenario's [train] seed)")
    parser.add_argument("--early-stopping", type=int, default=0, metavar="PATIENCE",
                        help="stop after PATIENCE evaluations without a better held-out loss (0 = all --steps)")
    parser.add_argument("--eval-every", type=int, default=100, help="steps between held-out evaluations")
    args = parser.parse_args()
    scenario = load_scenario(args.scenario)
    schema, sites = site_partitions(scenario)
    if args.sites == "all":
        chosen, name = sites, "all sites pooled"
    else:
        index = int(args.sites)
        if not 0 <= index < len(sites):
            raise SystemExit(f"--sites {index}: the scenario has sites 0..{len(sites) - 1}")
        chosen, name = [sites[index]], sites[index].site_id
    data = pooled([s.train for s in chosen])
    held = [s.holdout for s in chosen if s.holdout is not None and len(s.holdout)]
    recipe = replace(scenario.recipe, **({"seed": args.seed} if args.seed is not None else {}))
    trainer = Trainer(schema, scenario.model, recipe, scenario.runtime, steps=args.steps)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{scenario.name}: training on {name} ({len(data)} examples, channels present "
          f"{[c for c, p in zip(schema.channels, data.available.any(0).tolist()) if p]}) for {args.steps} steps")
    meta = {"data": {"source": f"{scenario.source} ({name})", "examples": len(data)}}
    if args.early_stopping:
        if not held:
            raise SystemExit(f"--early-stopping: {name} has no held-out examples ([scenario] holdout = 0)")
        plateau = Plateau(args.early_stopping)
        result = train_until_plateau(trainer, data, pooled(held), plateau, args.eval_every, out / "model.pt", meta,
                                     say=print)
        meta["early_stopping"] = plateau.record()
    else:
        result = trainer.train(data, progress=False, checkpoint_path=out / "model.pt", checkpoint_meta=meta)
    summary = {**asdict(result), "total_steps": trainer.step, "checkpoint": str(out / "model.pt"),
               "trained_on": name, **meta}
    (out / "train.json").write_text(json.dumps(summary, indent=2))
    print(f"{result.steps} steps in {result.seconds:.0f} s, mean loss {result.loss:.4f} -> {out / 'model.pt'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
