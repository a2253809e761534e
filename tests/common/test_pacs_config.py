"""site.toml's [pacs]: what a site admin can get wrong is refused by name, before anything connects."""

from __future__ import annotations

import pytest

from meddiff.common.config import ConfigError
from meddiff.common.site_config import load_site_config

DICOMWEB = '[data]\nsource = "dicomweb"\n[pacs]\nurl = "https://pacs.example.org/dicom-web"\n'


def write(tmp_path, text: str):
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def test_a_dicomweb_site_reads_its_endpoint_query_and_destination(tmp_path, monkeypatch):
    monkeypatch.setenv("PACS_USER", "reader")
    monkeypatch.setenv("PACS_PASSWORD", "s3cret")
    site = load_site_config(write(tmp_path, DICOMWEB + 'username_env = "PACS_USER"\npassword_env = "PACS_PASSWORD"\n'
                                  '[pacs.query]\nmodality = "MR"\nstudy_date = "20200101-"\nstudy_uids = ["1.2.3"]\n'
                                  '[pacs.destination]\nprotocol = "dimse"\nhost = "10.0.0.5"\nport = 11112\n'
                                  'called_aet = "RESEARCH"\n'))
    assert site.pacs.source.protocol == "dicomweb" and site.pacs.query.study_uids == ("1.2.3",)
    assert site.pacs.query.study_filters() == {"ModalitiesInStudy": "MR", "StudyDate": "20200101-"}
    assert site.pacs.source.credentials() == ("reader", "s3cret")
    assert "s3cret" not in site.pacs.source.describe() and site.pacs.destination.describe() == \
        "DIMSE RESEARCH@10.0.0.5:11112"


@pytest.mark.parametrize("text, message", [
    ('[data]\nsource = "dicomweb"\n', "needs a [pacs] table"),
    ('[data]\nsource = "dicomweb"\npath = "/data"\n[pacs]\nurl = "https://p/dicom-web"\n', "remove path"),
    ('[data]\nsource = "dicomweb"\nformat = "png"\n[pacs]\nurl = "https://p/dicom-web"\n', "format = 'png'"),
    ('[data]\nsource = "pacs"\n', "not one of ['folder', 'dicomweb', 'dimse']"),
    ('[data]\nsource = "dicomweb"\n[pacs]\nhost = "pacs"\n', "needs url"),
    ('[data]\nsource = "dimse"\n[pacs]\nurl = "https://p/dicom-web"\n', "needs host, port and called_aet"),
    ('[data]\nsource = "dicomweb"\n[pacs]\nurl = "https://user:pw@p/dicom-web"\n', "must not hold credentials"),
    ('[data]\nsource = "dicomweb"\n[pacs]\nurl = "ftp://p/dicom-web"\n', "must start with https://"),
    (DICOMWEB + 'protocol = "dimse"\n', "[data] source decides"),
    (DICOMWEB + '[pacs.query]\nstudy_date = "2020-01-01"\n', "not a DICOM date range"),
    (DICOMWEB + '[pacs.query]\nmodalty = "MR"\n', "unknown key(s) ['modalty']"),
    (DICOMWEB + '[pacs.destination]\nurl = "https://q/dicom-web"\n', "needs protocol"),
    (DICOMWEB + 'calling_aet = "A-VERY-LONG-AE-TITLE"\n', "at most 16 characters"),
])
def test_mistakes_are_refused_by_name(tmp_path, text, message):
    with pytest.raises(ConfigError) as error:
        load_site_config(write(tmp_path, text))
    assert message in str(error.value)


def test_a_credential_variable_that_is_not_set_is_named(tmp_path, monkeypatch):
    monkeypatch.delenv("PACS_PASSWORD", raising=False)
    site = load_site_config(write(tmp_path, DICOMWEB + 'password_env = "PACS_PASSWORD"\n'))
    with pytest.raises(ConfigError, match="PACS_PASSWORD, which is not set"):
        site.pacs.source.credentials()
