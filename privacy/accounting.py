"""Sample-level privacy accounting with Opacus's own accountants, composable across processes and runs.

A site's whole history of DP-SGD releases is a list of ``(noise_multiplier, sample_rate, steps)`` entries, the
same list Opacus's RDP and PRV accountants keep in ``history``. Rebuilding the accountant from that list gives
exactly the epsilon one long-lived PrivacyEngine would report, even though on the deployment engine each round
runs in a new process.
"""

from __future__ import annotations

from typing import Iterable

from opacus.accountants import create_accountant
from opacus.accountants.utils import get_noise_multiplier

Release = tuple[float, float, int]  # noise_multiplier, sample_rate, steps


def accountant_for(history: Iterable[Release], kind: str = "rdp"):
    """A fresh Opacus accountant (``rdp`` or ``prv``) holding ``history``."""
    accountant = create_accountant(kind)
    accountant.history = [(float(s), float(q), int(n)) for s, q, n in history if int(n) > 0]
    return accountant


def epsilon_spent(history: Iterable[Release], delta: float, kind: str = "rdp") -> float:
    """Epsilon at ``delta`` after every release in ``history`` (0 for none)."""
    accountant = accountant_for(history, kind)
    return float(accountant.get_epsilon(delta)) if accountant.history else 0.0


def noise_for_run(target_epsilon: float, delta: float, sample_rate: float, steps: int, kind: str = "rdp") -> float:
    """The smallest noise multiplier that keeps a run of ``steps`` steps at ``sample_rate`` within
    (target_epsilon, delta), from Opacus's search (tolerance 0.01 in epsilon)."""
    return float(get_noise_multiplier(target_epsilon=target_epsilon, target_delta=delta, sample_rate=sample_rate,
                                      steps=steps, accountant=kind))
