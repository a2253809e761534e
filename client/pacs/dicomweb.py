"""A PACS over DICOMweb (dicomweb-client): QIDO-RS to find studies, series and instances, WADO-RS to retrieve one
instance, STOW-RS to store. Every network failure becomes a PacsError naming the PACS and the fix."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import requests
from pydicom.dataset import Dataset

from ...common.pacs_config import PacsEndpoint, PacsQuery
from .remote import PacsError, RemoteInstance, SeriesMatch


def _value(item: dict, tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    value = values[0]
    if isinstance(value, dict):  # person names come as {"Alphabetic": ...}
        value = value.get("Alphabetic", "")
    return str(value)


PAGE, MAX_PAGES = 500, 10_000  # QIDO results are asked for page by page (servers cap how many they return)


def _paged(search: Callable[..., list[dict]], uid_tag: str, **kwargs) -> list[dict]:
    """Every result of a QIDO search, page by page. A server that ignores offset/limit (Orthanc's plugin does)
    sends a page with nothing new, which ends the loop; dicomweb-client's own get_remaining loops forever there."""
    results, seen, offset = [], set(), 0
    for _ in range(MAX_PAGES):
        page = search(offset=offset, limit=PAGE, **kwargs)
        new = [item for item in page if _value(item, uid_tag) not in seen]
        results += new
        seen.update(_value(item, uid_tag) for item in new)
        if len(page) < PAGE or not new:
            break
        offset += len(page)
    return results


class DicomwebPacs:
    def __init__(self, endpoint: PacsEndpoint) -> None:
        from dicomweb_client.api import DICOMwebClient
        from dicomweb_client.session_utils import add_certs_to_session, create_session, create_session_from_user_pass

        self.endpoint = endpoint
        credentials = endpoint.credentials()
        session = create_session_from_user_pass(*credentials) if credentials else create_session()
        # only what site.toml says: no proxy, .netrc or CA bundle from the environment (REQUESTS_CA_BUNDLE would
        # otherwise override ca_bundle, and a proxy would be a network peer the site did not name)
        session.trust_env = False
        if endpoint.ca_bundle:
            session = add_certs_to_session(session, ca_bundle=endpoint.ca_bundle)
        self.client = DICOMwebClient(endpoint.url.rstrip("/"), session=session, timeout=endpoint.timeout_s)
        self.client.set_http_retry_params(retry=False)  # one try: the error then says what happened, and when

    @contextmanager
    def _talking(self, what: str) -> Iterator[None]:
        """Turn what requests raises into one line: what failed, at which PACS, and what to do."""
        where, timeout = self.endpoint.describe(), self.endpoint.timeout_s
        try:
            yield
        except requests.exceptions.SSLError:
            raise PacsError(where, f"{what}: the server's TLS certificate is not trusted",
                            "set [pacs] ca_bundle to the hospital CA's certificate file") from None
        except requests.exceptions.Timeout:
            raise PacsError(where, f"{what}: no answer within {timeout:g} s",
                            "check that the PACS is up and not overloaded, or raise [pacs] timeout_s") from None
        except requests.exceptions.ConnectionError:
            raise PacsError(where, f"{what}: cannot connect (the PACS is down or the url is wrong)",
                            "check [pacs] url and that the PACS answers from this machine") from None
        except requests.exceptions.HTTPError as error:
            code = error.response.status_code if error.response is not None else 0
            if code in (401, 403):
                raise PacsError(where, f"{what}: the PACS refused the credentials (HTTP {code})",
                                "check the user and password named by [pacs] username_env / password_env") from None
            raise PacsError(where, f"{what}: the PACS answered HTTP {code}",
                            "check [pacs] url (the DICOMweb base, e.g. .../dicom-web) and the PACS's log") from None

    def _studies(self, query: PacsQuery) -> list[dict[str, Any]]:
        filters = query.study_filters()
        if not query.study_uids:
            return _paged(self.client.search_for_studies, "0020000D", search_filters=filters)
        found: list[dict[str, Any]] = []
        for uid in query.study_uids:
            found += _paged(self.client.search_for_studies, "0020000D",
                            search_filters={**filters, "StudyInstanceUID": uid})
        return found

    def find_series(self, query: PacsQuery) -> list[SeriesMatch]:
        with self._talking("query (QIDO-RS)"):
            matches = []
            for study in self._studies(query):
                study_uid = _value(study, "0020000D")
                filters = {"SeriesDescription": query.series_description} if query.series_description else {}
                for series in _paged(self.client.search_for_series, "0020000E", study_instance_uid=study_uid,
                                     search_filters=filters):
                    count = _value(series, "00201209")
                    matches.append(SeriesMatch(study_uid, _value(series, "0020000E"), _value(study, "00100020"),
                                               _value(series, "00080060"), _value(series, "0008103E"),
                                               _value(study, "00081030"), int(count) if count.isdigit() else 0))
            return matches

    def instances(self, series: SeriesMatch) -> list[RemoteInstance]:
        with self._talking(f"listing the instances of series {series.series_uid}"):
            found = _paged(self.client.search_for_instances, "00080018", study_instance_uid=series.study_uid,
                           series_instance_uid=series.series_uid)
        return [RemoteInstance(series.study_uid, series.series_uid, _value(item, "00080018"), _value(item, "00080016"))
                for item in found]

    def retrieve(self, instances: list[RemoteInstance],
                 receive: Callable[[RemoteInstance, Dataset], None]) -> list[tuple[RemoteInstance, str]]:
        """Each instance to ``receive``; returns those the PACS could not send (HTTP 4xx/5xx, unreadable), with
        why. A PACS that stops answering or refuses the credentials raises PacsError."""
        failed = []
        for instance in instances:
            try:
                with self._talking(f"retrieving instance {instance.sop_uid} (WADO-RS)"):
                    dataset = self.client.retrieve_instance(instance.study_uid, instance.series_uid,
                                                            instance.sop_uid)
            except PacsError as error:
                if "answered HTTP" not in error.reason:
                    raise
                failed.append((instance, error.reason))
                continue
            except Exception as error:  # a part pydicom cannot parse
                failed.append((instance, f"unreadable instance ({type(error).__name__}: {error})"))
                continue
            receive(instance, dataset)
        return failed

    def series_exists(self, study_uid: str, series_uid: str) -> bool:
        with self._talking("checking the destination (QIDO-RS)"):
            return bool(self.client.search_for_series(search_filters={"SeriesInstanceUID": series_uid}))

    def store(self, datasets: list[Dataset]) -> None:
        with self._talking("storing (STOW-RS)"):
            response = self.client.store_instances(datasets)
        failed = response.get("FailedSOPSequence") if response is not None else None
        if failed:
            raise PacsError(self.endpoint.describe(), f"storing (STOW-RS): the PACS refused {len(failed)} of "
                            f"{len(datasets)} instance(s)", "see the PACS's log for the reason")
