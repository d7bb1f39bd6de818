"""Input/output layer of the batch predictor: finding cases, reading them with validation, writing outputs.

Names load on first access (``bundle.io.load_case`` imports the readers then), so a command-line tool that only
parses its arguments does not pay for pydicom, nibabel and torch.
"""

from __future__ import annotations

import importlib

FORMATS = ("nifti", "dicom-seg", "png")  # the output kinds of the predictor (bundle.io.outputs)

_WHERE = {
    "DicomSource": "dicom", "read_dicom_series": "dicom", "write_dicom_seg": "dicom_seg",
    "Case": "discovery", "discover_cases": "discovery", "input_fingerprint": "discovery", "select_part": "discovery",
    "datalist_of": "discovery", "CaseError": "errors", "Geometry": "geometry",
    "CaseRecord": "manifest", "merge_manifests": "manifest", "read_record": "manifest", "write_manifest": "manifest",
    "write_record": "manifest", "OutputSettings": "outputs", "lesion_size": "outputs",
    "write_case_outputs": "outputs", "LoadedCase": "readers", "load_case": "readers", "write_nifti": "writers",
    "write_overlay": "writers",
}

_SUBMODULES = ("dicom", "dicom_seg", "discovery", "errors", "geometry", "manifest", "outputs", "readers", "resume",
               "writers")

__all__ = ["FORMATS", *sorted(_WHERE)]


def __getattr__(name: str):
    if name in _SUBMODULES:  # bundle.io.discovery.datalist_of in a config, without importing bundle.io.discovery
        return importlib.import_module(f".{name}", __name__)
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
