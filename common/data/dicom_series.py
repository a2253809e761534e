"""DICOM series -> channels, as a radiographer would map them.

A study holds more than the anatomical series a model should train on: localizers, reformats (MPR, MIP),
subtractions, parametric maps (ADC, FA, CBF, CBV, MTT, Tmax ...), secondary captures. Each series is first given a
*kind* from its ImageType and description; a channel rule takes only the kinds it allows (image channels:
``original``; mask channels: ``original`` and ``derived``; a rule's ``kinds`` key widens that). Plain
``DERIVED\\PRIMARY`` series without any other sign count as ``original``: several vendors mark ordinary acquisitions
so (the CT and MR files of pydicom's test data are), but they rank below a true ORIGINAL series.

When several series of one study can fill a channel, the most specific wins by this score, compared in order:
1. ORIGINAL before plain DERIVED\\PRIMARY before any other allowed kind;
2. how the rule's pattern matched: a whole token of the header value ("T1" in "T1 AX") before the start of a token
   ("T1" in "T1pre_reg") before the inside of a token ("T1" in "dT1");
3. more slices before fewer.
Equal scores are a tie: neither series is used, and the problem names both and a rule that would decide.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from pydicom.dataset import Dataset

from ..config import MASK_KINDS, IMAGE_KINDS, ChannelRule
from .dicom_pixels import number_of_frames
from .problems import DataProblem

LOCALIZER_WORDS = {"localizer", "localiser", "loc", "scout", "survey", "surview", "pilot", "tripilot", "3plane",
                   "topogram", "scanogram", "aascout"}
REFORMAT_WORDS = {"mpr", "mip", "minip", "mips", "reformat", "reformatted", "vrt", "curved", "mprage_mpr"}
REFORMAT_TYPES = {"MPR", "REFORMATTED", "MIP", "MINIP", "PROJECTION IMAGE", "CSA MPR", "VOLUME RENDER", "CURVED"}
PARAMETRIC = re.compile(r"^(e?adc|fa|md|trace|tracew|(n|r|s|sr|nr)?(cbf|cbv)|mtt|tmax|ttp|ktrans|kep|iauc|"
                        r"t1map|t2map|r2star|qsm|perfusion|map)$")
PARAMETRIC_TYPES = {"ADC", "FA", "TRACEW", "PERFUSION", "RCBF", "RCBV", "MTT", "TTP", "TMAX", "EADC", "CBF",
                    "CBV", "T1 MAP", "T2 MAP", "PARAMETRIC MAP"}
SUBTRACTION_WORDS = {"sub", "subtraction", "subtract", "subtr", "diff", "minus"}
SUBTRACTION_TOKEN = re.compile(r"^d(t1|t2|flair|pd)")  # dT1, dT1post: a difference image named after a contrast
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
KIND_RANK = {"original": 2, "derived-primary": 1}  # every other allowed kind ranks 0
MATCH_NAMES = {2: "whole-token match", 1: "token-start match", 0: "inside-token match"}
KIND_NAMES = {"original": "ORIGINAL", "derived-primary": "DERIVED\\PRIMARY"}


@dataclass
class SeriesFiles:
    """Headers of the files that make one volume: a series of single-frame files, or one multi-frame file."""

    study_uid: str
    series_uid: str
    entries: list[tuple[Path, Dataset]] = field(default_factory=list)

    @property
    def first(self) -> Dataset:
        return self.entries[0][1]

    @property
    def description(self) -> str:
        return str(self.first.get("SeriesDescription", "") or "")

    @property
    def modality(self) -> str:
        return str(self.first.get("Modality", "") or "?")

    @property
    def slices(self) -> int:
        return sum(number_of_frames(ds) for _, ds in self.entries)

    @property
    def folder(self) -> str:
        """Where the series lies: its folder, or the file itself for a one-file series."""
        if len(self.entries) == 1:
            return str(self.entries[0][0])
        return os.path.commonpath([str(p.parent) for p, _ in self.entries])

    def label(self) -> str:
        number = self.first.get("SeriesNumber", "")
        return (f"'{self.description}' ({self.modality}, {'series ' + str(number) + ', ' if number != '' else ''}"
                f"{self.slices} slice{'s' if self.slices != 1 else ''})")


def tokens(text: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", text.lower()) if t]


def series_kind(series: SeriesFiles) -> tuple[str, str]:
    """(kind, why): kind is original, derived-primary (counted as original), derived, localizer or reformat."""
    ds = series.first
    image_type = [str(v).strip().upper() for v in (ds.get("ImageType") or [])]
    words = set(tokens(series.description)) | set(tokens(str(ds.get("ProtocolName", "") or "")))
    typed = " ".join(image_type)
    if "LOCALIZER" in image_type or words & LOCALIZER_WORDS:
        return "localizer", "localizer/scout"
    if set(image_type) & REFORMAT_TYPES or words & REFORMAT_WORDS:
        return "reformat", f"reformat ({', '.join(sorted(set(image_type) & REFORMAT_TYPES) or sorted(words & REFORMAT_WORDS))})"
    maps = sorted({w.upper() for w in words if PARAMETRIC.match(w)} | (set(image_type) & PARAMETRIC_TYPES))
    if maps:
        return "derived", f"parametric map ({', '.join(maps)})"
    if "SUBTRACTION" in typed or "SUBTRACT" in typed or words & SUBTRACTION_WORDS or \
            any(SUBTRACTION_TOKEN.match(w) for w in words):
        return "derived", "subtraction"
    if len(image_type) > 2 and image_type[2] in ("P", "PHASE") or "PHASE" in image_type:
        return "derived", "phase image"
    if "SECONDARY" in image_type[1:2] or str(ds.get("SOPClassUID", "")) == SECONDARY_CAPTURE:
        return "derived", "secondary capture" if "SECONDARY" not in image_type[1:2] else \
            "secondary (" + "\\".join(image_type[:2]) + ")"
    if image_type[:1] == ["DERIVED"]:
        return "derived-primary", "DERIVED\\PRIMARY"
    return "original", "ORIGINAL" if image_type[:1] == ["ORIGINAL"] else "no ImageType"


def allowed_kinds(rule: ChannelRule) -> tuple[str, ...]:
    kinds = rule.kinds or (MASK_KINDS if rule.channel.startswith("mask") else IMAGE_KINDS)
    return kinds + ("derived-primary",) if "original" in kinds else kinds


def match_strength(rule: ChannelRule, series: SeriesFiles) -> int | None:
    """2 whole token, 1 start of a token, 0 inside a token, None when the rule's pattern is not found."""
    value = str(series.first.get(rule.field, "") or "")
    best = None
    for found in re.finditer(rule.pattern, value, flags=re.IGNORECASE):
        start, end = found.span()
        at_start = start == 0 or not value[start - 1].isalnum()
        at_end = end == len(value) or not value[end].isalnum() or start == end
        best = max(best if best is not None else -1, 2 if at_start and at_end else 1 if at_start else 0)
        if best == 2:
            break
    return best


@dataclass
class Candidate:
    series: SeriesFiles
    rule: ChannelRule
    kind: str
    strength: int

    @property
    def score(self) -> tuple[int, int, int]:
        return KIND_RANK.get(self.kind, 0), self.strength, self.series.slices


def candidate_for(series: SeriesFiles, rules: tuple[ChannelRule, ...], wanted: tuple[str, ...],
                  problems: list[DataProblem]) -> tuple[str, Candidate] | None:
    """The channel of the first rule that matches and allows the series' kind; otherwise a problem saying why."""
    kind, why = series_kind(series)
    refused = None
    for rule in rules:
        strength = match_strength(rule, series)
        if strength is None or (wanted and rule.channel not in wanted):
            continue
        if kind in allowed_kinds(rule):
            return rule.channel, Candidate(series, rule, kind, strength)
        refused = refused or rule
    if refused is not None:
        problems.append(DataProblem(series.folder, f"series {series.label()} is a {why}: not taken for channel "
                                    f"{refused.channel}", f"if it is wanted, add a [[data.dicom_rules]] entry for it "
                                    f"with kinds = [\"{kind}\"]"))
    else:
        problems.append(DataProblem(series.folder, f"no channel rule matches series {series.label()}"
                                    f"{'' if kind in ('original', 'derived-primary') else ', a ' + why}; not used",
                                    "add a [[data.dicom_rules]] entry in site.toml if this series is wanted "
                                    "(meddiff site check PATH --suggest-config prints one)"))
    return None


DECIDING_FIELDS = ("SeriesDescription", "ProtocolName", "ConvolutionKernel", "SequenceName", "SeriesNumber")


def deciding_rule(channel: str, chosen: SeriesFiles, other: SeriesFiles) -> str:
    """A ready-to-paste rule that picks ``chosen`` over ``other``: the first header field where they differ."""
    for name in DECIDING_FIELDS:
        a, b = str(chosen.first.get(name, "") or ""), str(other.first.get(name, "") or "")
        if a and a != b:
            return f'channel = "{channel}", pattern = "^{toml_regex(a)}$", field = "{name}"'
    return f'channel = "{channel}", pattern = "^{toml_regex(chosen.series_uid)}$", field = "SeriesInstanceUID"'


def ranked_candidates(channel: str, candidates: list[Candidate], problems: list[DataProblem]) -> list[Candidate]:
    """Candidates best first; a tie at the top is reported with both series and gives none."""
    ranked = sorted(candidates, key=lambda c: c.score, reverse=True)
    top = ranked[0]
    if len(ranked) > 1 and ranked[1].score == top.score:
        other = ranked[1]
        problems.append(DataProblem(
            top.series.folder, f"channel {channel}: series {top.series.label()} and {other.series.label()} match "
            f"rule {top.rule.channel} ({top.rule.field} ~ '{top.rule.pattern}') equally well "
            f"({KIND_NAMES.get(top.kind, top.kind)}, {MATCH_NAMES[top.strength]}, same slice count); "
            "neither was used", "put a [[data.dicom_rules]] entry before the others that matches only the one you "
            f"want, e.g. {deciding_rule(channel, top.series, other.series)}"))
        return []
    return ranked


def report_not_chosen(channel: str, chosen: Candidate, others: list[Candidate], problems: list[DataProblem]) -> None:
    for loser in others:
        problems.append(DataProblem(
            loser.series.folder, f"channel {channel}: series {loser.series.label()} also matches; kept "
            f"{chosen.series.label()} ({_why_better(chosen, loser)})",
            "nothing to do if that is right; otherwise add a more specific [[data.dicom_rules]] entry"))


def _why_better(top: Candidate, loser: Candidate) -> str:
    if KIND_RANK.get(top.kind, 0) != KIND_RANK.get(loser.kind, 0):
        return "ORIGINAL before DERIVED"
    if top.strength != loser.strength:
        return f"{MATCH_NAMES[top.strength]} before {MATCH_NAMES[loser.strength]}"
    return "more slices"


def toml_regex(value: str) -> str:
    """``value`` as a regular expression that matches exactly it, escaped for a TOML basic string."""
    exact = re.sub(r"([.^$*+?{}\[\]\\|()])", r"\\\1", value)  # regex metacharacters only: spaces stay readable
    return exact.replace("\\", "\\\\").replace('"', '\\"')
