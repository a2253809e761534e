"""When the coordinator delivers the global model to the sites: after the last round, and every k rounds."""

from __future__ import annotations

import pytest

from meddiff.common.config import ConfigError
from meddiff.server.settings import FederationSettings


@pytest.mark.parametrize("final, every, expected", [
    (True, 0, [6]), (True, 2, [2, 4, 6]), (True, 4, [4, 6]), (False, 0, []), (False, 3, [3, 6]),
])
def test_delivery_rounds(final, every, expected):
    settings = FederationSettings(rounds=6, deliver_final=final, deliver_every=every)
    assert [r for r in range(1, 7) if settings.delivers_after(r)] == expected


def test_a_negative_delivery_interval_is_refused():
    with pytest.raises(ConfigError, match="deliver_every"):
        FederationSettings(deliver_every=-1)


def test_early_stopping_needs_the_sites_held_out_loss():
    from meddiff.common.config import ConfigError
    from meddiff.server.settings import FederationSettings

    with pytest.raises(ConfigError, match="set evaluate = true"):
        FederationSettings(early_stopping_patience=2, evaluate=False)
    with pytest.raises(ConfigError, match="early_stopping_patience must be >= 0"):
        FederationSettings(early_stopping_patience=-1)
