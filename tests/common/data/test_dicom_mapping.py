"""DICOM series -> channels on studies as other hospitals export them (tests/common/data/dicom_corpus.py): derived
series, localizers, reformats, competing candidates, unknown descriptions, CT kernels, mixed modalities.
Each test asserts the exact channel -> series mapping or the exact problem text."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest

from meddiff.common.config import ChannelRule, DataConfig
from meddiff.common.data.dicom import load_dicom
from meddiff.common.data.problems import DataError
from tests.common.data.dicom_corpus import ct_series, pgbm_files, subtraction, write_series

pytestmark = pytest.mark.realdata


def mapping(data) -> dict[str, str]:
    """channel -> series description of the (single) study."""
    assert len(data.examples) == 1
    return dict(data.examples[0].meta["series"])


def reasons(data) -> list[str]:
    return [p.reason for p in data.problems]


def brain_study(tmp_path, extra: dict[str, dict]):
    """The real PGBM study (T1pre_reg, T1post, FLAIR_reg, T2_reg, Mask_Tumor) plus ``extra`` series."""
    out = tmp_path / "study"
    for number, (name, description) in enumerate([("T1pre", "T1pre_reg"), ("T1post", "T1post"),
                                                   ("FLAIR", "FLAIR_reg"), ("T2", "T2_reg"), ("Mask", "Mask_Tumor")]):
        write_series(out, pgbm_files(name), description=description, number=number + 1)
    for number, (description, options) in enumerate(extra.items(), start=90):
        options = dict(options)
        write_series(out, pgbm_files(options.pop("source")), description=description, number=number, **options)
    return out


ANATOMY = {"t1pre": "T1pre_reg", "t1post": "T1post", "flair": "FLAIR_reg", "t2": "T2_reg", "mask": "Mask_Tumor"}


def test_a_subtraction_named_like_t1_and_perfusion_maps_never_become_anatomy(tmp_path):
    extra = {"dT1": {"source": "T1post", "pixels": subtraction(pgbm_files("T1post"), pgbm_files("T1pre")),
                     "image_type": ["ORIGINAL", "PRIMARY", "M"]},  # even when the archive does not mark it DERIVED
             "ADC_reg": {"source": "T2", "image_type": ["DERIVED", "PRIMARY", "DIFFUSION", "ADC"]},
             "nCBF_reg": {"source": "T2"}, "sRCBV_reg": {"source": "FLAIR"}}
    data = load_dicom(brain_study(tmp_path, extra), DataConfig())
    assert mapping(data) == ANATOMY
    assert "series 'dT1' (MR, series 90, 24 slices) is a subtraction: not taken for channel t1pre" in reasons(data)
    assert "no channel rule matches series 'ADC_reg' (MR, series 91, 24 slices), a parametric map (ADC); not used" \
        in reasons(data)
    assert "no channel rule matches series 'nCBF_reg' (MR, series 92, 24 slices), a parametric map (NCBF); not used" \
        in reasons(data)
    assert "no channel rule matches series 'sRCBV_reg' (MR, series 93, 24 slices), a parametric map (SRCBV); not " \
           "used" in reasons(data)


def test_a_signed_series_that_looks_like_t1_is_refused_and_the_real_t1_is_kept(tmp_path):
    # nothing in its header says subtraction, and as a whole-token match it outranks T1pre_reg: only its values tell
    extra = {"T1 AX": {"source": "T1post", "pixels": subtraction(pgbm_files("T1post"), pgbm_files("T1pre"))}}
    data = load_dicom(brain_study(tmp_path, extra), DataConfig())
    assert mapping(data) == ANATOMY
    refused = [r for r in reasons(data) if r.startswith("channel t1pre, series 'T1 AX'")]
    assert len(refused) == 1 and "signed intensities (p0.5 = -" in refused[0]
    assert refused[0].endswith("unlike an MR magnitude image: a subtraction, difference or phase map?; left out")
    # the same series is accepted when the site says its values are right
    kept = load_dicom(tmp_path / "study", DataConfig(check_intensities=False))
    assert mapping(kept)["t1pre"] == "T1 AX"


def test_a_localizer_and_an_mpr_reformat_are_never_taken(tmp_path):
    extra = {"T2 LOC": {"source": "T2", "image_type": ["ORIGINAL", "PRIMARY", "LOCALIZER"]},
             "T1 MPR COR": {"source": "T1pre", "image_type": ["DERIVED", "SECONDARY", "MPR"]}}
    data = load_dicom(brain_study(tmp_path, extra), DataConfig())
    assert mapping(data) == ANATOMY
    assert "series 'T2 LOC' (MR, series 90, 24 slices) is a localizer/scout: not taken for channel t2" in reasons(data)
    assert "series 'T1 MPR COR' (MR, series 91, 24 slices) is a reformat (MPR): not taken for channel t1pre" \
        in reasons(data)
    # a rule that asks for reformats gets one
    rule = ChannelRule("t1mpr", "mpr", kinds=("reformat",))
    asked = load_dicom(tmp_path / "study", DataConfig(dicom_rules=(rule,)))
    assert mapping(asked) == {"t1mpr": "T1 MPR COR"}


def test_of_two_genuine_t1_series_the_one_with_more_slices_wins_and_equal_ones_tie(tmp_path):
    files = pgbm_files("T1pre")
    study = tmp_path / "study"
    write_series(study, files, description="T1 AX", number=3)
    write_series(study, files[:20], description="T1 AX", number=7)
    data = load_dicom(study, DataConfig())
    assert mapping(data) == {"t1pre": "T1 AX"} and data.examples[0].image.shape[1] == 24
    assert "channel t1pre: series 'T1 AX' (MR, series 7, 20 slices) also matches; kept 'T1 AX' (MR, series 3, " \
           "24 slices) (more slices)" in reasons(data)

    tie = tmp_path / "tie"
    write_series(tie, files, description="T1 AX", number=3)
    write_series(tie, files, description="T1 AX", number=7)
    with pytest.raises(DataError) as error:
        load_dicom(tie, DataConfig())
    text = [p for p in error.value.problems if "equally well" in p.reason]
    assert len(text) == 1
    assert text[0].reason.startswith("channel t1pre: series 'T1 AX' (MR, series ")
    assert "match rule t1pre (SeriesDescription ~ 't1') equally well (ORIGINAL, whole-token match, same slice " \
           "count); neither was used" in text[0].reason
    assert 'e.g. channel = "t1pre", pattern = "^' in text[0].fix and 'field = "SeriesNumber"' in text[0].fix


def test_an_mr_study_whose_descriptions_match_no_rule_says_so_and_prints_rules_to_paste(tmp_path):
    study = tmp_path / "study"
    write_series(study, pgbm_files("T2"), description="PD TSE AX", number=4, suffix="")  # no .dcm suffix
    write_series(study, pgbm_files("FLAIR"), description="SWAN 3D", number=5, suffix="")
    with pytest.raises(DataError) as error:
        load_dicom(study, DataConfig())
    message = str(error.value)
    assert message.startswith(f"{study}: none of the 2 series found can form a channel")
    assert '[[data.dicom_rules]]\nchannel = "pd"\npattern = "^PD TSE AX$"\nfield = "SeriesDescription"' \
        in message
    assert 'channel = "swan_3d"' in message
    assert "no channel rule matches series 'PD TSE AX' (MR, series 4, 24 slices); not used" in \
        [p.reason for p in error.value.problems]


def test_the_suggested_rules_load_the_study_when_pasted(tmp_path):
    study = tmp_path / "study"
    write_series(study, pgbm_files("T2"), description="PD TSE AX", number=4, suffix="")
    from meddiff.common.site_config import load_site_config
    from meddiff.common.data.suggest import suggest_data_section

    (tmp_path / "site.toml").write_text(suggest_data_section(study, DataConfig()))
    data = load_dicom(study, load_site_config(tmp_path / "site.toml").data)
    assert mapping(data) == {"pd": "PD TSE AX"}


def test_ct_with_two_reconstruction_kernels_is_a_tie_that_names_the_kernel(tmp_path):
    study_uid = pydicom.uid.generate_uid()
    ct_series(tmp_path, description="Head 5mm", number=2, slices=3, study=study_uid, ConvolutionKernel="H30s")
    ct_series(tmp_path, description="Head 5mm", number=3, slices=3, study=study_uid, ConvolutionKernel="H70h")
    with pytest.raises(DataError) as error:
        load_dicom(tmp_path, DataConfig())
    tie = [p for p in error.value.problems if "equally well" in p.reason][0]
    assert "match rule ct (Modality ~ '^CT$') equally well (DERIVED\\PRIMARY, whole-token match, same slice count)" in tie.reason
    assert tie.fix.endswith('field = "ConvolutionKernel"') and 'pattern = "^H' in tie.fix
    rule = ChannelRule("ct", "H30s", field="ConvolutionKernel")
    chosen = load_dicom(tmp_path, DataConfig(dicom_rules=(rule,)))
    assert mapping(chosen) == {"ct": "Head 5mm"}
    assert chosen.examples[0].image.min() <= -1000  # Hounsfield units


def test_a_study_mixing_modalities_keeps_the_channel_that_fits_and_names_the_rest(tmp_path):
    study_uid = pydicom.uid.generate_uid()
    write_series(tmp_path, pgbm_files("T2"), description="T2_reg", number=1, study=study_uid)
    ct_series(tmp_path, description="CT head", number=2, slices=3, study=study_uid)
    ct_series(tmp_path, description="PET AC", number=3, slices=3, study=study_uid, Modality="PT")
    data = load_dicom(tmp_path, DataConfig())
    assert mapping(data) == {"t2": "T2_reg"}
    assert "channel ct ('CT head'): shape (3, 512, 512) differs from the study's (24, 320, 260)" in reasons(data)
    assert "no channel rule matches series 'PET AC' (PT, series 3, 3 slices); not used" in reasons(data)


def test_ct_values_without_rescale_are_refused_as_not_hounsfield(tmp_path):
    study_uid = pydicom.uid.generate_uid()
    ct_series(tmp_path, description="Head", number=2, slices=2, study=study_uid, RescaleIntercept=0,
              stored=lambda hu: np.clip(hu + 1024, 0, 4095).astype(np.uint16))  # raw 12-bit values, no intercept
    with pytest.raises(DataError) as error:
        load_dicom(tmp_path, DataConfig())
    refused = [p.reason for p in error.value.problems if p.reason.startswith("channel ct, series 'Head'")]
    assert refused and "are not Hounsfield units" in refused[0]


def test_site_check_lists_the_channel_to_series_mapping_and_suggests_a_config(tmp_path):
    from meddiff.cli import main

    extra = {"dT1": {"source": "T1post", "pixels": subtraction(pgbm_files("T1post"), pgbm_files("T1pre"))}}
    study = brain_study(tmp_path, extra)
    assert main(["site", "check", str(study), "--width", "250"]) == 0
    assert main(["site", "check", str(study), "--suggest-config"]) == 0


def test_rules_with_an_unknown_kind_or_a_broken_pattern_are_refused():
    from meddiff.common.config import ConfigError

    with pytest.raises(ConfigError, match="kinds \\['maps'\\] for channel 't1'"):
        ChannelRule("t1", "t1", kinds=("maps",))
    with pytest.raises(ConfigError, match="is not a valid regular expression"):
        ChannelRule("t1", "t1(")


def test_the_default_rules_keep_the_real_pgbm_mapping():
    from tests.conftest import shared

    data = load_dicom(shared("pgbm/dicom/PGBM-001_1992-04-02"), DataConfig())
    assert mapping(data) == ANATOMY
    assert np.isfinite(data.examples[0].image).all()
