"""Validation of every training reply before it reaches the aggregate.

A reply is rejected (logged with its node id, excluded, the round goes on) when its arrays are missing or
extra, of the wrong shape or dtype, not finite, or when its update norm ||w_site - w_global|| is more than
``max_norm_ratio`` times the median norm of the *other* replies of the round (leave-one-out, so that with
two sites one broken update cannot hide by dragging the median up), or when it is larger than ``max_update_norm``
(site-level DP with clipping at the sites: an unclipped update would void the server's guarantee).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Arrays = dict[str, np.ndarray]


@dataclass(frozen=True)
class Verdict:
    node_id: int
    accepted: bool
    reason: str = ""
    update_norm: float = float("nan")


def structural_problem(arrays: Arrays, reference: Arrays) -> str:
    """Why ``arrays`` cannot be averaged with the global model, or '' when it can."""
    missing, extra = sorted(set(reference) - set(arrays)), sorted(set(arrays) - set(reference))
    if missing or extra:
        return f"keys differ from the global model (missing {missing[:3]}, unexpected {extra[:3]})"
    for key, expected in reference.items():
        value = arrays[key]
        if value.shape != expected.shape:
            return f"{key}: shape {tuple(value.shape)}, expected {tuple(expected.shape)}"
        if value.dtype != expected.dtype:
            return f"{key}: dtype {value.dtype}, expected {expected.dtype}"
        if not np.isfinite(value).all():
            return f"{key}: contains NaN or infinite values"
    return ""


def update_norm(arrays: Arrays, reference: Arrays) -> float:
    return float(np.sqrt(sum(float(np.sum((arrays[k].astype(np.float64) - reference[k]) ** 2)) for k in reference)))


def validate_updates(updates: dict[int, Arrays], reference: Arrays, max_norm_ratio: float = 10.0,
                     max_update_norm: float = float("inf")) -> list[Verdict]:
    """One verdict per node id, in the order given."""
    verdicts: dict[int, Verdict] = {}
    norms: dict[int, float] = {}
    for node, arrays in updates.items():
        problem = structural_problem(arrays, reference)
        if problem:
            verdicts[node] = Verdict(node, False, problem)
        else:
            norms[node] = update_norm(arrays, reference)
    for node, norm in norms.items():
        others = [n for other, n in norms.items() if other != node]
        median = float(np.median(others)) if others else norm
        if norm > max_update_norm * (1 + 1e-4):  # float32 rounding of a clipped update stays far below 1e-4
            verdicts[node] = Verdict(node, False, f"update norm {norm:.6g} exceeds the clipping norm {max_update_norm:g}: "
                                                  "the site did not clip its update", norm)
        elif others and norm > max_norm_ratio * max(median, 1e-12):
            verdicts[node] = Verdict(node, False, f"update norm {norm:.3g} is {norm / max(median, 1e-12):.1f}x the "
                                                  f"median of the other sites ({median:.3g}); limit {max_norm_ratio}x",
                                     norm)
        else:
            verdicts[node] = Verdict(node, True, "", norm)
    return [verdicts[node] for node in updates]
