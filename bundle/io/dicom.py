"""Reading one DICOM series into a (rows, cols[, slices]) array and its geometry, with validation.

Slices are ordered by their position along the slice normal (the cross product of the ImageOrientationPatient
row and column directions), never by file name or InstanceNumber. Single-frame series and multi-frame (enhanced)
objects with per-frame positions are both handled. A series is refused, with the file and the reason, when it is
not an image (a report, a PDF, a SEG), mixes sizes or orientations, has several slices at one position, misses
slices, or has uneven or tilted slice spacing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID, ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from .errors import CaseError
from .geometry import Geometry, dicom_affine

__all__ = ["DicomSource", "read_dicom_series"]

NON_IMAGE_WITH_PIXELS = {"1.2.840.10008.5.1.4.1.1.66.4": "it is a Segmentation (an output, not an image)"}
_SPACING_TOLERANCE = 0.01  # relative, between consecutive slice positions


@dataclass
class DicomSource:
    """What the DICOM SEG writer needs: the source headers (pixel data dropped) and, for each slice k of the
    array, ``frames[k] = (index into datasets, 0-based frame number)``."""

    datasets: list[pydicom.Dataset]
    frames: list[tuple[int, int]]


def _dcmread(path: Path) -> pydicom.Dataset:
    try:
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:  # no preamble: discovery has seen that it starts with a DICOM tag
            ds = pydicom.dcmread(path, force=True)
    except Exception as err:  # pydicom raises many types on truncated or corrupt files
        raise CaseError(path, f"unreadable DICOM file ({type(err).__name__}: {err})") from err
    if "TransferSyntaxUID" not in ds.file_meta:  # old files without meta header: the encoding read is the syntax
        implicit, little = ds.original_encoding
        ds.file_meta.TransferSyntaxUID = (ImplicitVRLittleEndian if implicit else
                                          ExplicitVRLittleEndian if little else ExplicitVRBigEndian)
    return ds


def _check_is_image(path: Path, ds: pydicom.Dataset) -> None:
    sop_class = UID(str(ds.get("SOPClassUID", "")))
    name = f"SOP class {sop_class.name} ({sop_class})" if sop_class else "no SOPClassUID"
    if sop_class in NON_IMAGE_WITH_PIXELS:
        raise CaseError(path, f"non-image DICOM: {name}: {NON_IMAGE_WITH_PIXELS[sop_class]}")
    if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")) or "Rows" not in ds:
        raise CaseError(path, f"non-image DICOM: {name} has no pixel data to segment")


def _item(ds: pydicom.Dataset, frame: int, group: str, keyword: str) -> object | None:
    """``keyword`` of functional group ``group`` for ``frame`` (per-frame first, then shared), or ``None``."""
    for seq_name, index in (("PerFrameFunctionalGroupsSequence", frame), ("SharedFunctionalGroupsSequence", 0)):
        seq = ds.get(seq_name)
        if seq is not None and len(seq) > index and group in seq[index] and len(seq[index][group].value) > 0:
            value = seq[index][group][0].get(keyword)
            if value is not None:
                return value
    return None


def _frame_attr(ds: pydicom.Dataset, frame: int, group: str, keyword: str) -> object | None:
    value = _item(ds, frame, group, keyword) if "SharedFunctionalGroupsSequence" in ds else None
    return ds.get(keyword) if value is None else value


def _frame_geometry(ds: pydicom.Dataset, frame: int) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray]:
    """(ImagePositionPatient, ImageOrientationPatient, in-plane spacing) of one frame; missing -> None / 1 mm."""
    ipp = _frame_attr(ds, frame, "PlanePositionSequence", "ImagePositionPatient")
    iop = _frame_attr(ds, frame, "PlaneOrientationSequence", "ImageOrientationPatient")
    spacing = _frame_attr(ds, frame, "PixelMeasuresSequence", "PixelSpacing") or ds.get("ImagerPixelSpacing")
    ipp_array = None if ipp is None else np.asarray(ipp, dtype=float)
    iop_array = None if iop is None else np.asarray(iop, dtype=float)
    return ipp_array, iop_array, np.asarray(spacing if spacing is not None else (1.0, 1.0), dtype=float)


def _frame_pixels(ds: pydicom.Dataset, pixels: np.ndarray, frame: int) -> np.ndarray:
    """One frame as float32 (rows, cols): rescaled to modality values, colour converted to luminance."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    array = (pixels[frame] if frames > 1 else pixels).astype(np.float32)
    if array.ndim == 3:  # (rows, cols, 3): pydicom has converted YBR to RGB
        array = array[..., :3] @ np.asarray([0.299, 0.587, 0.114], dtype=np.float32)
    slope = _frame_attr(ds, frame, "PixelValueTransformationSequence", "RescaleSlope")
    intercept = _frame_attr(ds, frame, "PixelValueTransformationSequence", "RescaleIntercept")
    if slope is not None or intercept is not None:
        array = array * np.float32(slope if slope is not None else 1.0) + np.float32(intercept or 0.0)
    return array


def _check_consistent(paths: list[Path], datasets: list[pydicom.Dataset]) -> None:
    first = datasets[0]
    for path, ds in zip(paths, datasets, strict=True):
        for keyword in ("Rows", "Columns", "SamplesPerPixel", "FrameOfReferenceUID"):
            if ds.get(keyword) != first.get(keyword):
                raise CaseError(path, f"mixed series: {keyword} is {ds.get(keyword)} here but {first.get(keyword)} "
                                      f"in {paths[0].name}; expected one value for the whole series")


def _order_slices(paths: list[tuple[Path, int]], geoms: list[tuple]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """Sort frames along the normal and validate the stack. Returns (order, first position, step vector)."""
    iop0 = geoms[0][1]
    for (where, _), (ipp, iop, spacing) in zip(paths, geoms, strict=True):
        if ipp is None or iop is None:
            raise CaseError(where, "a frame of a multi-slice series has no ImagePositionPatient or "
                                   "ImageOrientationPatient: cannot place the slices in space")
        if np.abs(iop - iop0).max() > 1e-4:
            raise CaseError(where, f"mixed orientations in one series: ImageOrientationPatient {iop.tolist()} vs "
                                   f"{iop0.tolist()}")
        if np.abs(spacing - geoms[0][2]).max() > 1e-4:
            raise CaseError(where, f"mixed pixel spacing in one series: {spacing.tolist()} vs {geoms[0][2].tolist()}")
    normal = np.cross(iop0[:3], iop0[3:])
    positions = np.asarray([g[0] for g in geoms])
    along = positions @ normal
    order = [int(i) for i in np.argsort(along, kind="stable")]
    steps = np.diff(along[order])
    where = [paths[i][0] for i in order]
    _check_steps(steps, along[order], where)
    offsets = positions[order] - positions[order[0]]
    drift = offsets - np.outer(offsets @ normal, normal)
    if np.abs(drift).max() > 1e-2 * max(float(np.median(steps)), 1e-3):
        raise CaseError(where[0].parent, "slices are not stacked along the slice normal (gantry tilt or sheared "
                                         "stack); expected positions on one line perpendicular to the slices")
    step = (positions[order[-1]] - positions[order[0]]) / (len(order) - 1)
    return order, positions[order[0]], step


def _check_steps(steps: np.ndarray, along: np.ndarray, where: list[Path]) -> None:
    median = float(np.median(steps))
    duplicates = np.flatnonzero(steps < 1e-3)
    if duplicates.size or median < 1e-3:
        k = int(duplicates[0]) if duplicates.size else 0
        raise CaseError(where[k + 1], f"{duplicates.size or len(steps)} slice(s) share a position with another "
                                      f"({where[k].name} and {where[k + 1].name} at {along[k]:.3f} mm): expected "
                                      "one slice per position (several echoes, phases or time points in one series?)")
    gaps = np.flatnonzero(steps > median * (1 + _SPACING_TOLERANCE) + 1e-3)
    if gaps.size and np.all(np.abs(steps[gaps] / median - np.round(steps[gaps] / median)) < 0.1):
        k = int(gaps[0])
        missing = int(sum(round(steps[g] / median) - 1 for g in gaps))
        raise CaseError(where[k].parent, f"missing slice(s): about {missing} missing; gap of {steps[k]:.3f} mm "
                                         f"between {where[k].name} and {where[k + 1].name} where the spacing is "
                                         f"{median:.3f} mm")
    if np.abs(steps - median).max() > _SPACING_TOLERANCE * median + 1e-3:
        raise CaseError(where[0].parent, f"inconsistent slice spacing: steps from {steps.min():.3f} to "
                                         f"{steps.max():.3f} mm; expected one spacing for the whole series")


def _geometry_2d(ipp: np.ndarray | None, iop: np.ndarray | None, spacing: np.ndarray, ds: pydicom.Dataset) -> Geometry:
    known = "PixelSpacing" in ds or "ImagerPixelSpacing" in ds or "SharedFunctionalGroupsSequence" in ds
    iop = iop if iop is not None else np.asarray([1.0, 0, 0, 0, 1.0, 0])
    normal = np.cross(iop[:3], iop[3:])
    affine = dicom_affine(iop, spacing, ipp if ipp is not None else np.zeros(3), normal)
    return Geometry(affine, (float(spacing[0]), float(spacing[1])), spacing_known=known)


def _syntax_problem(ds: pydicom.Dataset) -> str:
    """For a compressed transfer syntax, which one it is and whether this installation can decode it."""
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    if not syntax or not syntax.is_compressed:
        return ""
    from pydicom.pixels import get_decoder

    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return f": transfer syntax {syntax.name} ({syntax}) is not supported (no decoder exists for it here)"
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        return f": transfer syntax {syntax.name} ({syntax}) needs a decoder that is not installed ({missing})"
    return f" (transfer syntax {syntax.name})"


def read_dicom_series(paths: tuple[Path, ...] | list[Path]) -> tuple[np.ndarray, Geometry, DicomSource]:
    """Read a series: float32 (rows, cols) for a single frame, or (rows, cols, slices) ordered along the normal.

    Raises:
        CaseError: naming the file (or the series folder) and what is wrong.
    """
    paths = list(paths)
    datasets = [_dcmread(p) for p in paths]
    for path, ds in zip(paths, datasets, strict=True):
        _check_is_image(path, ds)
    _check_consistent(paths, datasets)
    refs = [(d, f) for d, ds in enumerate(datasets) for f in range(int(ds.get("NumberOfFrames", 1) or 1))]
    geoms = [_frame_geometry(datasets[d], f) for d, f in refs]
    if len(refs) == 1:
        order, geometry = [0], _geometry_2d(*geoms[0], datasets[0])
    else:
        order, origin, step = _order_slices([(paths[d], f) for d, f in refs], geoms)
        iop, spacing = geoms[0][1], geoms[0][2]
        geometry = Geometry(dicom_affine(iop, spacing, origin, step),
                            (float(spacing[0]), float(spacing[1]), float(np.linalg.norm(step))))
    slices: list[np.ndarray | None] = [None] * len(refs)
    position = {ref_index: k for k, ref_index in enumerate(order)}
    ref_index = 0
    for path, ds in zip(paths, datasets, strict=True):
        try:
            pixels = ds.pixel_array
        except Exception as err:  # missing decoder, truncated pixel data, ...
            raise CaseError(path, f"cannot decode the pixel data{_syntax_problem(ds)} ({type(err).__name__}: {err})"
                            ) from err
        for f in range(int(ds.get("NumberOfFrames", 1) or 1)):
            slices[position[ref_index]] = _frame_pixels(ds, pixels, f)
            ref_index += 1
        del pixels
        for keyword in ("PixelData", "FloatPixelData", "DoubleFloatPixelData"):
            if keyword in ds:
                delattr(ds, keyword)
    image = slices[0] if len(slices) == 1 else np.stack(slices, axis=-1)
    if any(ds.get("PhotometricInterpretation", "") == "MONOCHROME1" for ds in datasets):
        image = image.max() + image.min() - image  # MONOCHROME1 shows low values bright: make bright high
    return image, geometry, DicomSource(datasets, [refs[i] for i in order])
