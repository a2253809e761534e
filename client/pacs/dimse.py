"""A PACS over DIMSE (pynetdicom): C-FIND (study root) to find studies, series and instances, C-GET to retrieve
them on the same association (no port to open at the site, unlike C-MOVE), C-STORE to store. The PACS must know
our AE title (calling_aet) and allow it to query, get and store."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pydicom.dataset import Dataset
from pydicom.uid import AllTransferSyntaxes, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ...common.pacs_config import PacsEndpoint, PacsQuery
from .remote import PacsError, RemoteInstance, SeriesMatch

FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model - FIND
GET = "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root Query/Retrieve Information Model - GET
MAX_CONTEXTS = 128
GET_BATCH = 64  # instances named in one C-GET (one round trip instead of one each)
SUCCESS, PENDING = 0x0000, (0xFF00, 0xFF01)


class DimsePacs:
    def __init__(self, endpoint: PacsEndpoint) -> None:
        self.endpoint = endpoint

    def _ae(self):
        from pynetdicom import AE

        ae = AE(ae_title=self.endpoint.calling_aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.endpoint.timeout_s
        ae.connection_timeout = self.endpoint.timeout_s
        return ae

    def _reachable(self, what: str) -> None:
        try:
            with socket.create_connection((self.endpoint.host, self.endpoint.port), timeout=self.endpoint.timeout_s):
                pass
        except TimeoutError:
            raise PacsError(self.endpoint.describe(), f"{what}: no answer within {self.endpoint.timeout_s:g} s",
                            "check that the PACS is up, or raise [pacs] timeout_s") from None
        except OSError as error:
            raise PacsError(self.endpoint.describe(), f"{what}: cannot connect ({error.strerror or error})",
                            "check [pacs] host and port and that the PACS answers from this machine") from None

    @contextmanager
    def _association(self, what: str, contexts: list[tuple[str, list[str]]], roles=(), handlers=()) -> Iterator:
        self._reachable(what)
        ae = self._ae()
        for sop_class, syntaxes in contexts:
            ae.add_requested_context(sop_class, syntaxes)
        started = time.monotonic()
        assoc = ae.associate(self.endpoint.host, self.endpoint.port, ae_title=self.endpoint.called_aet,
                             ext_neg=list(roles) or None, evt_handlers=list(handlers) or None)
        if not assoc.is_established:
            if time.monotonic() - started >= 0.9 * self.endpoint.timeout_s:
                raise PacsError(self.endpoint.describe(), f"{what}: no answer within {self.endpoint.timeout_s:g} s",
                                "check that the PACS is up and that host and port are its DICOM port, or raise "
                                "[pacs] timeout_s")
            reason = "rejected the association" if assoc.is_rejected else "ended the association"
            raise PacsError(self.endpoint.describe(), f"{what}: the PACS {reason}", self._register())
        try:
            yield assoc
        finally:
            if assoc.is_established:
                assoc.release()

    def _register(self) -> str:
        return (f"ask the PACS admin to register AE title {self.endpoint.calling_aet!r} (this site's calling_aet) "
                "and allow it to query, retrieve and store; check [pacs] called_aet")

    def _lost(self, started: float, what: str) -> None:
        """No status came back: the PACS ended the association (it does so for an AE title it does not allow)
        or stopped answering."""
        if time.monotonic() - started < 0.9 * self.endpoint.timeout_s:
            raise PacsError(self.endpoint.describe(), f"{what}: the PACS ended the association", self._register())
        raise PacsError(self.endpoint.describe(), f"{what}: no answer within {self.endpoint.timeout_s:g} s",
                        "check the PACS, or raise [pacs] timeout_s")

    def _find(self, assoc, query: Dataset, what: str) -> list[Dataset]:
        found = []
        started = time.monotonic()
        for status, identifier in assoc.send_c_find(query, FIND):
            if not status:
                self._lost(started, what)
            if status.Status in PENDING and identifier is not None:
                found.append(identifier)
            elif status.Status != SUCCESS:
                raise PacsError(self.endpoint.describe(), f"{what}: C-FIND failed with status 0x{status.Status:04X}",
                                "see the PACS's log; check that it allows this AE title to query")
        return found

    def find_series(self, query: PacsQuery) -> list[SeriesMatch]:
        what = "query (C-FIND)"
        with self._association(what, [(FIND, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]) as assoc:
            studies = []
            for uid in query.study_uids or ("",):
                study = Dataset()
                study.QueryRetrieveLevel, study.StudyInstanceUID, study.PatientID = "STUDY", uid, ""
                study.ModalitiesInStudy = query.modality
                study.StudyDescription, study.StudyDate = query.study_description, query.study_date
                studies += self._find(assoc, study, what)
            matches = []
            for study in studies:
                series = Dataset()
                series.QueryRetrieveLevel, series.StudyInstanceUID = "SERIES", study.StudyInstanceUID
                series.SeriesInstanceUID, series.Modality = "", ""
                series.SeriesDescription, series.NumberOfSeriesRelatedInstances = query.series_description, ""
                for item in self._find(assoc, series, what):
                    count = str(item.get("NumberOfSeriesRelatedInstances", "") or "")
                    matches.append(SeriesMatch(str(study.StudyInstanceUID), str(item.SeriesInstanceUID),
                                               str(study.get("PatientID", "")), str(item.get("Modality", "")),
                                               str(item.get("SeriesDescription", "")),
                                               str(study.get("StudyDescription", "")),
                                               int(count) if count.isdigit() else 0))
            return matches

    def instances(self, series: SeriesMatch) -> list[RemoteInstance]:
        what = f"listing the instances of series {series.series_uid} (C-FIND)"
        with self._association(what, [(FIND, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]) as assoc:
            query = Dataset()
            query.QueryRetrieveLevel, query.StudyInstanceUID = "IMAGE", series.study_uid
            query.SeriesInstanceUID, query.SOPInstanceUID, query.SOPClassUID = series.series_uid, "", ""
            return [RemoteInstance(series.study_uid, series.series_uid, str(item.SOPInstanceUID),
                                   str(item.get("SOPClassUID", ""))) for item in self._find(assoc, query, what)]

    def retrieve(self, instances: list[RemoteInstance],
                 receive: Callable[[RemoteInstance, Dataset], None]) -> list[tuple[RemoteInstance, str]]:
        """C-GET each instance (the PACS sends it back as a C-STORE on the same association), one association per
        batch of storage classes; returns those not delivered, with why. A lost connection raises PacsError."""
        from pynetdicom import build_role, evt

        by_uid = {instance.sop_uid: instance for instance in instances}
        delivered: set[str] = set()

        def stored(event) -> int:
            dataset = event.dataset
            dataset.file_meta = event.file_meta
            instance = by_uid.get(str(dataset.get("SOPInstanceUID", "")))
            if instance is None:
                return 0xA700  # not an instance we asked for
            receive(instance, dataset)
            delivered.add(instance.sop_uid)
            return SUCCESS

        classes = sorted({instance.sop_class_uid for instance in instances})
        failed = []
        for start in range(0, len(classes), MAX_CONTEXTS - 1):
            batch = classes[start:start + MAX_CONTEXTS - 1]
            wanted = [instance for instance in instances if instance.sop_class_uid in batch]
            failed += self._get(wanted, batch, [(evt.EVT_C_STORE, stored)], build_role, delivered)
        return failed

    def _get(self, wanted, classes, handlers, build_role, delivered) -> list[tuple[RemoteInstance, str]]:
        what, failed = "retrieving (C-GET)", []
        contexts = [(GET, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]
        contexts += [(sop_class, list(AllTransferSyntaxes)) for sop_class in classes if sop_class]
        roles = [build_role(sop_class, scp_role=True) for sop_class in classes if sop_class]
        with self._association(what, contexts, roles, handlers) as assoc:
            by_series: dict[tuple[str, str], list[RemoteInstance]] = {}
            for instance in wanted:
                by_series.setdefault((instance.study_uid, instance.series_uid), []).append(instance)
            for (study_uid, series_uid), batch in by_series.items():
                for start in range(0, len(batch), GET_BATCH):  # one C-GET names many instances (list of UIDs)
                    part = batch[start:start + GET_BATCH]
                    query = Dataset()
                    query.QueryRetrieveLevel, query.StudyInstanceUID = "IMAGE", study_uid
                    query.SeriesInstanceUID = series_uid
                    query.SOPInstanceUID = [i.sop_uid for i in part] if len(part) > 1 else part[0].sop_uid
                    final = None
                    started = time.monotonic()
                    for status, _ in assoc.send_c_get(query, GET):
                        if not status:
                            self._lost(started, what)
                        final = status.Status
                    failed += [(i, "not delivered by the PACS (C-GET status "
                                   f"{'none' if final is None else f'0x{final:04X}'})")
                               for i in part if i.sop_uid not in delivered]
        return failed

    def series_exists(self, study_uid: str, series_uid: str) -> bool:
        what = "checking the destination (C-FIND)"
        with self._association(what, [(FIND, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])]) as assoc:
            query = Dataset()
            query.QueryRetrieveLevel, query.StudyInstanceUID, query.SeriesInstanceUID = "SERIES", study_uid, series_uid
            return bool(self._find(assoc, query, what))

    def store(self, datasets: list[Dataset]) -> None:
        what = "storing (C-STORE)"
        classes = sorted({str(ds.SOPClassUID) for ds in datasets})
        contexts = [(sop_class, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]) for sop_class in classes]
        with self._association(what, contexts) as assoc:
            for dataset in datasets:
                status = assoc.send_c_store(dataset)
                if not status or status.Status != SUCCESS:
                    code = f"0x{status.Status:04X}" if status else "no answer"
                    raise PacsError(self.endpoint.describe(), f"{what}: the PACS refused instance "
                                    f"{dataset.SOPInstanceUID} ({code})", "see the PACS's log for the reason")
