"""Site config parsing and the channel schema."""

from __future__ import annotations

import pytest

from meddiff.common.config import ChannelRule, ConfigError
from meddiff.common.site_config import load_site_config
from meddiff.common.schema import ChannelSchema


def test_site_config_reads_rules_and_values(tmp_path):
    (tmp_path / "site.toml").write_text("""
site_id = "hospital-a"
[data]
path = "/data/export"
channels = ["t2", "mask"]
mask_values = [255]
resolution = 64
[[data.dicom_rules]]
channel = "t2"
pattern = "t2"
[[data.dicom_rules]]
channel = "mask"
pattern = "seg"
field = "ProtocolName"
""")
    config = load_site_config(tmp_path / "site.toml")
    assert config.site_id == "hospital-a"
    assert config.data.channels == ("t2", "mask") and config.data.mask_values == (255,)
    assert config.data.dicom_rules == (ChannelRule("t2", "t2"), ChannelRule("mask", "seg", "ProtocolName"))


@pytest.mark.parametrize("text, match", [
    ("[daata]\n", "unknown section"),
    ("[[data.dicom_rules]]\nchannel = 't2'\n", "needs 'channel' and 'pattern'"),
    ("[data]\nslices = 1\n", "true or false"),
    ("[data]\nlower_percentile = 99\nupper_percentile = 1\n", "lower_percentile"),
    ("[data\n", "not valid TOML"),
])
def test_site_config_refuses_mistakes_by_name(tmp_path, text, match):
    (tmp_path / "site.toml").write_text(text)
    with pytest.raises(ConfigError, match=match) as error:
        load_site_config(tmp_path / "site.toml")
    assert "site.toml" in str(error.value)


def test_schema_masks_and_errors():
    schema = ChannelSchema(("t1", "t2", "mask"), ("healthy", "lesion"), mask_labels=2)
    assert schema.mask_indices == (2,) and schema.image_indices == (0, 1)
    assert ChannelSchema.from_dict(schema.to_dict()) == schema
    with pytest.raises(ValueError, match="unique"):
        ChannelSchema(("t1", "t1"))
    with pytest.raises(KeyError, match="flair"):
        schema.index("flair")
