"""Ready-to-paste ``[[data.dicom_rules]]`` built from the series a folder holds, for a site admin to edit.

Each acquired (original) series gets a rule whose pattern is its exact description; the channel name is the
contrast the description names (t1pre, t1post, t2, flair, pd, dwi, swi, ct ...) or, failing that, the description
made into a name. Derived series, localizers and reformats are listed as comments, never as rules.
"""

from __future__ import annotations

import re

from .dicom_series import SeriesFiles, series_kind, tokens, toml_regex

CONTRASTS = (  # (channel, pattern on the description's tokens), most specific first
    ("mask", r"\b(mask|seg|segmentation|label|roi)"),
    ("flair", r"\bflair"),
    ("t1post", r"\bt1\w*\b.*\b(post|gd|c|contrast|ce)\b|\bt1(post|gd|ce|c)\b"),
    ("t1pre", r"\bt1"),
    ("t2", r"\bt2"),
    ("pd", r"\bpd|proton"),
    ("dwi", r"\b(dwi|diff|diffusion)"),
    ("swi", r"\bswi"),
)
MODALITY_CHANNELS = {"CT": "ct", "CR": "xray", "DX": "xray", "MG": "mammo", "US": "us", "PT": "pet", "NM": "nm"}


def suggested_channel(series: SeriesFiles) -> str:
    """The channel a radiographer would call this series."""
    words = " ".join(tokens(series.description))
    for channel, pattern in CONTRASTS:
        if re.search(pattern, words):
            return channel
    if series.modality in MODALITY_CHANNELS and series.modality != "MR":
        return MODALITY_CHANNELS[series.modality]
    name = "_".join(tokens(series.description))[:24].strip("_") or f"series{series.first.get('SeriesNumber', '')}"
    return name if name[0].isalpha() else f"s_{name}"


def rules_block(series_list: list[SeriesFiles]) -> str:
    """TOML for ``[[data.dicom_rules]]``: one rule per distinct acquired series, the rest as comments."""
    lines, seen, names = [], set(), {}
    for series in sorted(series_list, key=lambda s: (s.description, s.modality)):
        kind, why = series_kind(series)
        key = (series.description, series.modality)
        if key in seen:
            continue
        seen.add(key)
        if kind not in ("original", "derived-primary") and not suggested_channel(series).startswith("mask"):
            lines.append(f"# not suggested: series {series.label()} is a {why}")
            continue
        channel = suggested_channel(series)
        names[channel] = names.get(channel, 0) + 1
        if names[channel] > 1:
            channel = f"{channel}_{names[channel]}"
        field, value = ("SeriesDescription", series.description) if series.description else ("Modality",
                                                                                               series.modality)
        kinds = "\nkinds = [\"original\", \"derived\"]" if kind == "derived" else ""
        lines.append(f"[[data.dicom_rules]]\nchannel = \"{channel}\"\npattern = \"^{toml_regex(value)}$\"\n"
                     f"field = \"{field}\"{kinds}")
    return "\n".join(lines)
