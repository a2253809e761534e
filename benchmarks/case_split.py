"""Split a folder of cases (images/ + a label folder, matched by file name) into train/ and test/ by case.

The split is written under the benchmark's run folder (outside version control) as hard links where the file
system allows, else copies: meddiff does not follow symbolic links out of a data folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path


def split_cases(source: Path, out: Path, test_every: int = 0, train_cases: int = 0, labels: str = "labels",
                pattern: str = "*", test_cases: int = 0) -> tuple[Path, Path]:
    """(train, test) folders; only cases with both an image and a label.

    test_every = k puts every k-th case (sorted by name) in the test set; otherwise the first train_cases train
    and the rest test (only the last test_cases of them when test_cases > 0).
    """
    cases = sorted(p.name for p in (source / "images").glob(pattern) if (source / labels / p.name).exists())
    if test_every:
        test = cases[test_every - 1::test_every]
        train = [c for c in cases if c not in set(test)]
    else:
        train, test = cases[:train_cases], cases[train_cases:]
        test = test[-test_cases:] if test_cases else test
    folders = out / "train", out / "test"
    for folder, names in zip(folders, (train, test)):
        for kind in ("images", labels):
            (folder / kind).mkdir(parents=True, exist_ok=True)
            for name in names:
                target = folder / kind / name
                if not target.exists():
                    try:
                        os.link(source / kind / name, target)
                    except OSError:  # another file system
                        shutil.copy2(source / kind / name, target)
    return folders
