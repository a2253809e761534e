"""The names a config or a command may use for a schedule, a noise, a sampler and a fast-path switch, without
importing torch.

Why: site.toml and the run spec are validated in the ClientApp process Flower starts for every message, which
must stay light (see client/client_app.py), and `meddiff --help` should not wait for torch either; the modules
that implement these names import torch.
tests/common/diffusion/test_names.py keeps each list equal to what its implementation provides.
"""

SCHEDULE_NAMES = ("ddpm", "ddpm-cosine", "vp", "subvp", "ve")
NOISES = ("gaussian", "simplex")
SWITCH_VALUES = ("auto", "on", "off")
SAMPLER_NAMES = ("ddpm", "ddim", "euler-maruyama", "pc", "ode", "langevin", "dpm++2m")
