"""Site-level (central) differential privacy at the server, with Flower's fixed-clipping wrappers and accountant.

Each round releases ``mean_i(clip(w_i - w_global, C)) + N(0, (z C / m)^2)`` over the m sites aggregated: the
update of every site is clipped to norm C (by the server, ``server-clipping``, or by the site itself with
Flower's ``fixedclipping_mod``, ``client-clipping``), so the sum has sensitivity C and the noise multiplier z.
Flower's RDP accountant (Google's dp-accounting) composes the rounds: neighbouring federations differ by one
whole site (add or remove), no amplification by sampling.

What it protects: whether any one site (all of its images at once) took part, against everyone who sees the
global models. What it does not: the coordinator sees each site's update in the clear (server-clipping) or
clipped but noise-free (client-clipping) unless secure aggregation hides them; nor does it say anything about a
single image beyond that (that is the site's own sample-level DP-SGD).

Two places where our round loop differs from ``Strategy.start``, both for the guarantee to hold as stated:
- sites that failed, timed out or were rejected are left out *before* aggregation (Flower's wrapper voids the
  whole round when any reply is an error), and the noise is calibrated to the m sites actually averaged
  (noise std z C / m on the mean is noise z C on the sum, which is what the accountant assumes);
- the aggregate is the uniform mean of the clipped updates (each site weight 1), as the accountant requires.
"""

from __future__ import annotations

import json
import logging

from flwr.app import ArrayRecord, ConfigRecord, Message
from flwr.serverapp import Grid, NeighboringRelation, PrivacyConfig, SamplingMethod
from flwr.serverapp import strategy as flower
from flwr.serverapp.exception import PrivacyBudgetExhausted
from flwr.serverapp.strategy.dp_fixed_clipping import DifferentialPrivacyFixedClippingBase

from ..common.messages import UNIFORM_WEIGHT
from .settings import FederationSettings

log = logging.getLogger(__name__)

KIND = "site-level DP at the server"

__all__ = ["KIND", "PrivacyBudgetExhausted", "wrap", "configure_train", "prepare_aggregation",
           "privacy_record", "accountant_state", "restore_accountant"]


def wrap(inner: flower.Strategy, settings: FederationSettings) -> DifferentialPrivacyFixedClippingBase:
    """``inner`` (a FedAvg weighted by messages.UNIFORM_WEIGHT, set to 1 on every accepted reply) inside Flower's fixed-clipping wrapper and accountant."""
    from flwr.serverapp import RdpAccountant  # needs flwr[dp] (dp-accounting); imported only when central DP is on

    accountant = RdpAccountant(PrivacyConfig(
        target_delta=settings.dp_delta, population_size=settings.population,
        neighboring_relation=NeighboringRelation.ADD_OR_REMOVE_ONE, sampling_method=SamplingMethod.NO_AMPLIFICATION,
        max_epsilon=settings.dp_max_epsilon or None))
    wrapper = (flower.DifferentialPrivacyServerSideFixedClipping if settings.central_dp == "server-clipping"
               else flower.DifferentialPrivacyClientSideFixedClipping)
    return wrapper(inner, settings.dp_noise_multiplier, settings.dp_clipping_norm, settings.population,
                   accountant=accountant)


def configure_train(dp: DifferentialPrivacyFixedClippingBase, server_round: int, arrays: ArrayRecord,
                    config: ConfigRecord, grid: Grid) -> list[Message]:
    """The wrapper's configure_train, told how many sites it will sample (all connected: fraction_train = 1).

    Raises PrivacyBudgetExhausted before anything is sent when the round would pass dp_max_epsilon."""
    for attempt in range(2):  # a site may connect between counting and sampling: count again once
        dp.num_sampled_clients = max(1, len(list(grid.get_node_ids())))
        try:
            return list(dp.configure_train(server_round, arrays, ConfigRecord(dict(config)), grid))
        except ValueError as error:
            if "num_sampled_clients" not in str(error) or attempt:
                raise
    raise AssertionError("unreachable")


def prepare_aggregation(dp: DifferentialPrivacyFixedClippingBase, accepted: list[Message]) -> None:
    """Noise for the sites actually averaged, and uniform weights (see the module docstring)."""
    dp.num_sampled_clients = max(1, len(accepted))
    for reply in accepted:
        reply.content["metrics"][UNIFORM_WEIGHT] = 1


def privacy_record(dp: DifferentialPrivacyFixedClippingBase) -> dict:
    """What the run has spent, with everything needed to state it exactly."""
    spent = dp.privacy_spent()
    return {"kind": KIND, "epsilon": spent.epsilon, "delta": spent.delta,
            "accountant": f"{spent.accounting_method.upper()} (Flower, dp-accounting), add/remove one site, "
                          "no sampling amplification",
            "releases": spent.num_releases, "noise_multiplier": dp.noise_multiplier,
            "clipping_norm": dp.clipping_norm,
            "clipping": "server" if isinstance(dp, flower.DifferentialPrivacyServerSideFixedClipping) else "site"}


def describe(record: dict) -> str:
    """One line that states a site-level guarantee exactly (kind, epsilon, delta, accountant, mechanism)."""
    return (f"{record['kind']}: epsilon {record['epsilon']:.4g} at delta {record['delta']:.2g} after "
            f"{record['releases']} rounds ({record['accountant']}; noise multiplier {record['noise_multiplier']:g}, "
            f"updates clipped to {record['clipping_norm']:g} at the {record['clipping']})")


def describe_settings(settings: FederationSettings) -> str:
    """The same, before the run: what will be enforced."""
    limit = f", run stops before epsilon {settings.dp_max_epsilon:g}" if settings.dp_max_epsilon else ""
    where = "server" if settings.central_dp == "server-clipping" else "site"
    return (f"{KIND}: noise multiplier {settings.dp_noise_multiplier:g}, updates clipped to "
            f"{settings.dp_clipping_norm:g} at the {where}, delta {settings.dp_delta:.2g}, RDP accountant (Flower), "
            f"{settings.population} sites{limit}")


def accountant_state(dp: DifferentialPrivacyFixedClippingBase) -> str:
    return json.dumps(dp.accountant.state_dict())


def restore_accountant(dp: DifferentialPrivacyFixedClippingBase, state: str) -> None:
    """Resume composes on top of every round released before the crash (Flower checks the config matches)."""
    dp.accountant.load_state_dict(json.loads(state))
