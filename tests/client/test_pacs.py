"""A site whose data is in a PACS: a real Orthanc on loopback (tests/client/orthanc.py) holding the shared real PGBM
study. Fetch over DICOMweb and DIMSE, incrementally; train from it; store synthetic series back and find them
there; and each way it goes wrong (down, wrong password, empty query, a corrupt instance, a timeout) is one line
with nothing half-written in the cache."""

from __future__ import annotations

import json
import os
import re
import socket
import stat
import threading
from pathlib import Path

import pydicom
import pytest
import requests
from pydicom.uid import generate_uid

from meddiff.cli import main
from meddiff.client.pacs.cache import PacsCache
from meddiff.client.pacs.remote import RemoteInstance
from meddiff.client.pacs.store import store_synthetic
from meddiff.common.config import ConfigError
from meddiff.common.site_config import load_site_config
from tests.client.orthanc import ORTHANC_AET, OUR_AET, PASSWORD, USER, free_port, missing_reason, start_orthanc
from tests.conftest import TINY_TRAIN_FLAGS, shared

pytestmark = pytest.mark.realdata
SERIES, INSTANCES = 5, 120  # the shared PGBM study: T1prereg, T1post, FLAIRreg, T2reg, MaskTumor x 24 slices
ENV = {"MEDDIFF_TEST_PACS_USER": USER, "MEDDIFF_TEST_PACS_PASSWORD": PASSWORD}


def study_files() -> list[Path]:
    return sorted(p for p in shared("pgbm/dicom").rglob("*") if p.is_file())


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    reason = missing_reason()
    if reason:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI=true and {reason}")
        pytest.skip(reason)
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"), free_port())
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def loaded(orthanc):
    files = study_files()
    assert orthanc.upload(files) == INSTANCES
    return orthanc


@pytest.fixture(autouse=True)
def _credentials(monkeypatch):
    for name, value in ENV.items():
        monkeypatch.setenv(name, value)


def site_toml(folder: Path, source: str, endpoint: str, query: str = 'modality = "MR"', extra: str = "") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "site.toml"
    path.write_text(f'site_id = "pacs-site"\n[data]\nsource = "{source}"\n[pacs]\n{endpoint}\n{extra}\n'
                    f'[pacs.query]\n{query}\n')
    return path


def dicomweb(server, timeout: float = 30) -> str:
    return (f'url = "{server.dicomweb}"\nusername_env = "MEDDIFF_TEST_PACS_USER"\n'
            f'password_env = "MEDDIFF_TEST_PACS_PASSWORD"\ntimeout_s = {timeout}')


def dimse(server, aet: str = OUR_AET) -> str:
    return f'host = "127.0.0.1"\nport = {server.dicom_port}\ncalled_aet = "{ORTHANC_AET}"\ncalling_aet = "{aet}"'


def cached_files(config: Path) -> dict[str, Path]:
    site = load_site_config(config)
    cache = PacsCache(config.parent / ".meddiff-site" / "pacs" / site.site_id)
    return {p.stem: p for p in cache.instances_dir.rglob("*.dcm")}


def sync(config: Path, capsys) -> str:
    assert main(["site", "sync", "--config", str(config)]) == 0
    return capsys.readouterr().out


def test_dicomweb_fetches_once_then_only_what_is_new_and_drops_what_is_gone(loaded, tmp_path, capsys):
    config = site_toml(tmp_path / "site", "dicomweb", dicomweb(loaded))
    out = sync(config, capsys)
    assert f"{SERIES} series, {INSTANCES} instances matched; {INSTANCES} fetched" in out
    files = cached_files(config)
    assert len(files) == INSTANCES
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in files.values())
    assert stat.S_IMODE((config.parent / ".meddiff-site" / "pacs" / "pacs-site").stat().st_mode) == 0o700
    assert PASSWORD not in out and PASSWORD not in (config.parent / ".meddiff-site" / "pacs" / "pacs-site" /
                                                    "index.json").read_text()
    before = {name: path.stat().st_mtime_ns for name, path in files.items()}

    assert f"{INSTANCES} instances matched; 0 fetched, 0 removed" in sync(config, capsys)
    assert {name: path.stat().st_mtime_ns for name, path in cached_files(config).items()} == before

    extra = pydicom.dcmread(study_files()[0])  # a new image in the study: a new SOP Instance UID
    extra.SOPInstanceUID = extra.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    extra.InstanceNumber = 999
    extra.save_as(tmp_path / "extra.dcm")
    assert loaded.upload([tmp_path / "extra.dcm"]) == 1
    assert f"{INSTANCES + 1} instances matched; 1 fetched, 0 removed" in sync(config, capsys)
    loaded.delete_instance(str(extra.SOPInstanceUID))
    assert f"{INSTANCES} instances matched; 0 fetched, 1 removed" in sync(config, capsys)
    assert set(cached_files(config)) == set(before)

    assert main(["site", "check", "--config", str(config), "--width", "200"]) == 0
    check = capsys.readouterr().out
    for description in ("T1pre_reg", "T1post", "FLAIR_reg", "T2_reg", "Mask_Tumor"):
        assert description in check
    assert "PGBM-001" in check and "examples" in check.lower()


def test_dimse_fetches_the_same_instances_as_dicomweb(loaded, tmp_path, capsys):
    web = site_toml(tmp_path / "web", "dicomweb", dicomweb(loaded))
    net = site_toml(tmp_path / "dimse", "dimse", dimse(loaded))
    sync(web, capsys)
    assert f"{INSTANCES} instances matched; {INSTANCES} fetched" in sync(net, capsys)
    by_web, by_dimse = cached_files(web), cached_files(net)
    assert set(by_web) == set(by_dimse)
    some = sorted(by_web)[::30]
    for uid in some:  # the same pixels and headers whichever protocol fetched them
        a, b = pydicom.dcmread(by_web[uid]), pydicom.dcmread(by_dimse[uid])
        assert a.SeriesInstanceUID == b.SeriesInstanceUID and (a.pixel_array == b.pixel_array).all()
    assert f"{INSTANCES} instances matched; 0 fetched" in sync(net, capsys)


@pytest.fixture(scope="module")
def trained_from_pacs(loaded, tmp_path_factory):
    folder = tmp_path_factory.mktemp("trained-from-pacs")
    os.environ.update(ENV)
    config = site_toml(folder / "site", "dicomweb", dicomweb(loaded))
    assert main(["train", "--config", str(config), "--out", str(folder / "run"), "--steps", "2",
                 *[f for f in TINY_TRAIN_FLAGS if f not in ("--phantom-n", "8")]]) == 0
    return config, folder / "run" / "model.pt"


def test_train_reads_the_pacs_through_the_site_config(trained_from_pacs):
    config, model = trained_from_pacs
    report = json.loads((model.parent / "train.json").read_text())
    assert model.exists() and len(cached_files(config)) == INSTANCES
    assert report["data"]["source"].endswith(".meddiff-site/pacs/pacs-site/instances")
    assert report["data"]["studies"] == 1 and report["data"]["examples"] >= 20  # the study's slices with anatomy


def test_synthetic_series_go_back_to_the_pacs_once_and_are_audited(trained_from_pacs, loaded, tmp_path, capsys):
    config, model = trained_from_pacs
    assert main(["generate", "--model", str(model), "--n", "4", "--steps", "2", "--out", str(tmp_path / "gen"),
                 "--export", "dicom", "--to-pacs", "--site-config", str(config)]) == 0
    out = capsys.readouterr().out
    assert "stored series" in out
    records = json.loads((tmp_path / "gen" / "generate.json").read_text())["pacs"]
    assert len(records) == 5  # one series per channel: T1pre, T1post, FLAIR, T2 and the tumour mask
    for record in records:
        found = requests.get(f"{loaded.dicomweb}/series", params={"SeriesInstanceUID": record["series_uid"]},
                             auth=(USER, PASSWORD), timeout=30).json()
        assert len(found) == 1, f"series {record['series_uid']} is not in the PACS"
        assert found[0]["0008103E"]["Value"][0].startswith("SYNTHETIC - meddiff")
        assert int(found[0]["00201209"]["Value"][0]) == record["instances"] == 4
    audit = (config.parent / ".meddiff-site" / "audit.jsonl").read_text()
    assert all(r["series_uid"] in audit for r in records) and "synthetic-series-stored" in audit
    exported = tmp_path / "gen" / "dicom"
    with pytest.raises(Exception, match="nothing was overwritten"):
        store_synthetic(config, exported, str(model))

    for path in exported.rglob("*.dcm"):  # the same images as a new series, over C-STORE to a DIMSE destination
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = "2.25.4242"
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.save_as(path)
    destination = site_toml(tmp_path / "dimse-dest", "dicomweb", dicomweb(loaded),
                            extra="[pacs.destination]\nprotocol = \"dimse\"\n" + dimse(loaded))
    records = store_synthetic(destination, exported, str(model))
    assert [r["series_uid"] for r in records] == ["2.25.4242"] and records[0]["destination"].startswith("DIMSE")
    found = requests.get(f"{loaded.dicomweb}/series", params={"SeriesInstanceUID": "2.25.4242"},
                         auth=(USER, PASSWORD), timeout=30).json()
    assert len(found) == 1


def test_only_synthetic_images_are_stored(loaded, tmp_path):
    config = site_toml(tmp_path / "site", "dicomweb", dicomweb(loaded))
    (tmp_path / "real").mkdir()
    pydicom.dcmread(study_files()[0]).save_as(tmp_path / "real" / "a.dcm")
    with pytest.raises(Exception, match="not a meddiff synthetic image"):
        store_synthetic(config, tmp_path / "real", "model.pt")


def error_line(config: Path, capsys) -> str:
    assert main(["site", "sync", "--config", str(config)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    return err


def test_pacs_down_wrong_password_empty_query_and_timeout_are_one_line_each(loaded, tmp_path, capsys, monkeypatch):
    closed = free_port()
    down = site_toml(tmp_path / "down", "dicomweb", f'url = "http://127.0.0.1:{closed}/dicom-web"')
    assert "cannot connect" in error_line(down, capsys)
    assert not (tmp_path / "down" / ".meddiff-site" / "pacs" / "pacs-site" / "instances").exists()
    dimse_down = site_toml(tmp_path / "dimse-down", "dimse",
                           f'host = "127.0.0.1"\nport = {closed}\ncalled_aet = "{ORTHANC_AET}"')
    assert "cannot connect" in error_line(dimse_down, capsys)

    monkeypatch.setenv("MEDDIFF_TEST_PACS_PASSWORD", "wrong-password")
    wrong = site_toml(tmp_path / "wrong", "dicomweb", dicomweb(loaded))
    line = error_line(wrong, capsys)
    assert "refused the credentials (HTTP 401)" in line and "wrong-password" not in line
    monkeypatch.delenv("MEDDIFF_TEST_PACS_PASSWORD")
    with pytest.raises(ConfigError, match="MEDDIFF_TEST_PACS_PASSWORD"):
        load_site_config(wrong).pacs.source.credentials()
    monkeypatch.setenv("MEDDIFF_TEST_PACS_PASSWORD", PASSWORD)

    empty = site_toml(tmp_path / "empty", "dicomweb", dicomweb(loaded), query='modality = "CT"')
    assert "matched no study" in error_line(empty, capsys) and "widen [pacs.query]" in capsys.readouterr().err + \
        error_line(empty, capsys)

    silent = socket.socket()  # accepts connections and never answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    held, stop = [], threading.Event()

    def accept() -> None:
        silent.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(silent.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        port = silent.getsockname()[1]
        slow = site_toml(tmp_path / "slow", "dicomweb", f'url = "http://127.0.0.1:{port}/dicom-web"\ntimeout_s = 1')
        assert "no answer within 1 s" in error_line(slow, capsys)
        slow_dimse = site_toml(tmp_path / "slow-dimse", "dimse", f'host = "127.0.0.1"\nport = {port}\n'
                               f'called_aet = "{ORTHANC_AET}"\ntimeout_s = 1')
        assert "no answer within 1 s" in error_line(slow_dimse, capsys)
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in held:
            connection.close()
        silent.close()


def test_an_unknown_ae_title_is_told_to_ask_the_pacs_admin(loaded, tmp_path, capsys):
    stranger = site_toml(tmp_path / "stranger", "dimse", dimse(loaded, aet="STRANGER"))
    line = error_line(stranger, capsys)
    assert "ended the association" in line and "register AE title 'STRANGER'" in line


def test_a_corrupt_instance_is_listed_and_the_rest_of_the_study_loads(loaded, tmp_path, capsys):
    source = next(p for p in study_files() if "T1post" in str(p))
    broken = pydicom.dcmread(source)
    broken.SOPInstanceUID = broken.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    broken.InstanceNumber = 998
    broken.PixelData = broken.PixelData[: len(broken.PixelData) // 3]  # truncated pixel data
    broken.save_as(tmp_path / "broken.dcm")
    assert loaded.upload([tmp_path / "broken.dcm"]) == 1
    try:
        config = site_toml(tmp_path / "site", "dicomweb", dicomweb(loaded))
        assert f"{INSTANCES + 1} instances matched" in sync(config, capsys)
        assert main(["site", "check", "--config", str(config), "--width", "250"]) == 0
        check = capsys.readouterr().out
        assert "pixel data cannot be decoded" in check  # the broken instance is listed ...
        assert re.search(r"T1post\s+│\s+25\s+│\s+25", check)  # ... one of 25 in its series, all fetched ...
        assert "slices                         │ 24" in check  # ... and the 24 good slices of each channel load
    finally:
        loaded.delete_instance(str(broken.SOPInstanceUID))


def test_nothing_fetched_is_visible_to_training_before_the_sync_commits(tmp_path):
    """Instances of an unfinished sync wait in staging; ``instances/`` and the index change only at commit."""
    cache = PacsCache(tmp_path / "cache")
    ds = pydicom.dcmread(study_files()[0])
    one = RemoteInstance(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID))
    cache.stage(one, ds)
    assert not cache.instances_dir.exists() and not cache.has_data()
    assert cache.commit([one], {"endpoint": "test"}) == (1, 0)
    assert cache.has_data() and cache.live_path(one).exists() and not cache.staging_dir.exists()
    assert cache.commit([], {"endpoint": "test"}) == (0, 1) and not cache.live_path(one).exists()


def test_a_round_trains_on_the_last_sync_when_the_pacs_is_down(loaded, tmp_path, capsys, caplog):
    """A daemon's round (load_site) syncs first; a PACS that cannot be reached then does not cost the round."""
    from meddiff.client.site_loading import load_site

    config = site_toml(tmp_path / "site", "dicomweb", dicomweb(loaded))
    with pytest.raises(Exception, match="cannot connect"):  # nothing fetched yet: nothing to fall back on
        load_site(str(site_toml(tmp_path / "fresh", "dicomweb", f'url = "http://127.0.0.1:{free_port()}/x"')), 16)
    site = load_site(str(config), 16)
    assert len(site.train) + len(site.holdout) >= 20 and len(cached_files(config)) == INSTANCES
    config.write_text(config.read_text().replace(loaded.dicomweb, f"http://127.0.0.1:{free_port()}/dicom-web"))
    again = load_site(str(config), 16)
    assert len(again.train) == len(site.train)
    assert any("last complete sync" in record.getMessage() for record in caplog.records)
    assert "cannot connect" in error_line(config, capsys)  # an admin's command still says it plainly


def test_dicomweb_over_tls_trusts_the_hospital_ca_named_in_site_toml(loaded, tmp_path, capsys):
    """HTTPS with a certificate from the hospital's own CA: trusted through [pacs] ca_bundle, refused without it."""
    from meddiff.common.certs import create_credentials
    from tests.client.orthanc import TlsFront

    paths = create_credentials(tmp_path / "ca", ["127.0.0.1", "localhost"], [])
    front = TlsFront(loaded.http_port, paths["server_cert"], paths["server_key"])
    try:
        endpoint = (f'url = "https://127.0.0.1:{front.port}/dicom-web"\nusername_env = "MEDDIFF_TEST_PACS_USER"\n'
                    'password_env = "MEDDIFF_TEST_PACS_PASSWORD"')
        trusted = site_toml(tmp_path / "trusted", "dicomweb", endpoint + f'\nca_bundle = "{paths["ca"]}"')
        assert f"{INSTANCES} instances matched; {INSTANCES} fetched" in sync(trusted, capsys)
        untrusted = site_toml(tmp_path / "untrusted", "dicomweb", endpoint)
        line = error_line(untrusted, capsys)
        assert "TLS certificate is not trusted" in line and "ca_bundle" in line
    finally:
        front.stop()
