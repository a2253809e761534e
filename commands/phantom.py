"""``meddiff phantom``: the built-in digital phantom written as a data set any command can read."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..common.console import plain_console


def add_parser(commands) -> None:
    p = commands.add_parser("phantom", help="write the built-in digital phantom as a data set")
    p.add_argument("--out", default="phantom_out", help="folder for phantom.npz and phantom_grid.png")
    p.add_argument("--n", type=int, default=32, help="number of examples")
    p.add_argument("--size", type=int, default=64, help="image size in pixels")
    p.add_argument("--ndim", type=int, choices=[2, 3], default=2, help="2D images or 3D volumes")
    p.add_argument("--site", type=int, default=0, help="virtual site: each renders with its own scanner")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Write a phantom data set as a channel-layout .npz (loadable like any site's data) and a PNG grid."""
    from ..common.config import ConfigError
    from ..common.data.phantom import phantom_dataset
    from ..common.data.transforms import prepare
    from ..common.grid import example_grid

    if args.n < 1 or args.size < 8:
        raise ConfigError(f"--n must be >= 1 and --size >= 8 (got --n {args.n}, --size {args.size})")
    data = phantom_dataset(args.n, size=args.size, ndim=args.ndim, site=args.site, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = {c: np.stack([e.image[i] for e in data.examples]) for i, c in enumerate(data.schema.channels)}
    np.savez_compressed(out / "phantom.npz", **arrays, labels=np.asarray([e.label for e in data.examples]),
                        patient=np.asarray([e.patient for e in data.examples]),
                        class_names=np.asarray(data.schema.class_names))
    ready = prepare(data.examples[:8], data.schema, args.size, slices=False)
    grid = example_grid(ready, data.schema, out / "phantom_grid.png")
    plain_console().print(f"wrote {out / 'phantom.npz'} ({args.n} examples, channels {list(data.schema.channels)}) "
                          f"and {grid}", soft_wrap=True)
    return 0
