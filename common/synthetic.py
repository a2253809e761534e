"""How a synthetic image is marked wherever it leaves the model (tasks/export.py writes the marks; the PACS store
of client/pacs/store.py sends nothing without them)."""

from __future__ import annotations

from pydicom.dataset import Dataset

SYNTHETIC_MARK = "SYNTHETIC - meddiff"


def is_synthetic_dicom(dataset: Dataset) -> bool:
    """DERIVED\\SECONDARY, ConversionType SYN (synthetic image) and the meddiff description, as exported."""
    return (list(dataset.get("ImageType", []))[:2] == ["DERIVED", "SECONDARY"]
            and dataset.get("ConversionType", "") == "SYN"
            and str(dataset.get("SeriesDescription", "")).startswith(SYNTHETIC_MARK))
