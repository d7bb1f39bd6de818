"""Input/output layer of the batch predictor: finding cases, reading them with validation, writing outputs."""

from __future__ import annotations

from .dicom import DicomSource, read_dicom_series
from .dicom_seg import write_dicom_seg
from .discovery import Case, discover_cases, input_fingerprint, select_part
from .errors import CaseError
from .geometry import Geometry
from .manifest import CaseRecord, merge_manifests, read_record, write_manifest, write_record
from .outputs import FORMATS, OutputSettings, lesion_size, write_case_outputs
from .readers import LoadedCase, load_case
from .writers import atomic_path, write_nifti, write_overlay

__all__ = [
    "FORMATS",
    "Case",
    "CaseError",
    "CaseRecord",
    "DicomSource",
    "Geometry",
    "LoadedCase",
    "OutputSettings",
    "atomic_path",
    "discover_cases",
    "input_fingerprint",
    "lesion_size",
    "load_case",
    "merge_manifests",
    "read_dicom_series",
    "read_record",
    "select_part",
    "write_case_outputs",
    "write_dicom_seg",
    "write_manifest",
    "write_nifti",
    "write_overlay",
    "write_record",
]
