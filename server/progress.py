"""One line per round for the people watching a run: round k of n, each site's loss, what was aggregated.

Logged on ``meddiff.progress``; `meddiff simulate` prints that logger on the console (Flower's own and Ray's
messages go to the run's log file instead), the coordinator's ServerApp log carries it too.
"""

from __future__ import annotations

import logging

progress_log = logging.getLogger("meddiff.progress")


def site_name(metrics: dict, node: str) -> str:
    return f"site-{int(metrics['partition-id'])}" if "partition-id" in metrics else f"node {str(node)[-6:]}"


def round_summary(server_round: int, rounds: int, round_metrics: dict, entry: dict) -> str:
    """e.g. 'round 2 of 6 (41 s): train loss site-0 0.312, site-1 0.298; held-out loss 0.290; 3 aggregated'."""
    train = sorted((site_name(m, node), m) for node, m in round_metrics["train"].items())
    losses = ", ".join(f"{name} {m['train-loss']:.4f}" for name, m in train if "train-loss" in m)
    held_out = f"; held-out loss {entry['eval_loss']:.4f}" if entry.get("eval_loss") is not None else ""
    rejected = round_metrics.get("rejected") or []
    outcome = f"{len(train)} sites aggregated" if entry.get("aggregated") else "nothing aggregated (model kept)"
    return (f"round {server_round} of {rounds} ({round_metrics['seconds']:.0f} s): train loss {losses or '-'}"
            f"{held_out}; {outcome}{f', {len(rejected)} rejected' if rejected else ''}")
