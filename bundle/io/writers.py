"""Writing a case's outputs, each atomically: into a hidden temporary file beside the target, then renamed.

A reader of the output folder (or ``--continue`` after a crash) therefore sees every file either complete or
absent, never half written.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image
from scipy import ndimage

from ..fileio import atomic_path
from .geometry import Geometry

__all__ = ["write_nifti", "write_png_label", "write_overlay", "overlay_slices"]

CONTOUR_RGB = (255, 40, 40)


def write_nifti(path: str | os.PathLike, data: np.ndarray, geometry: Geometry) -> Path:
    """Save ``data`` (spatial axes first, as the source image) with the source affine; a source NIfTI header
    passes on its qform/sform codes and units."""
    img = nib.Nifti1Image(np.asanyarray(data), geometry.affine)
    source = geometry.nifti_header
    if source is not None:
        img.header.set_qform(geometry.affine, code=int(source["qform_code"]) or 1)
        img.header.set_sform(geometry.affine, code=int(source["sform_code"]) or 1)
        img.header.set_xyzt_units(*source.get_xyzt_units())
    else:
        img.header.set_qform(geometry.affine, code=1)
        img.header.set_sform(geometry.affine, code=1)
        img.header.set_xyzt_units("mm")
    with atomic_path(path) as tmp:
        nib.save(img, tmp)
    return Path(path)


def write_png_label(path: str | os.PathLike, labels: np.ndarray, num_classes: int) -> Path:
    """A 2D label map as an 8-bit PNG of the source's size; classes spread over 0..255 (two classes: 0 / 255)."""
    scale = 255 // max(num_classes - 1, 1)
    with atomic_path(path) as tmp:
        Image.fromarray((labels.astype(np.uint16) * scale).astype(np.uint8), mode="L").save(tmp)
    return Path(path)


def _to_gray8(image: np.ndarray, low: float, high: float) -> np.ndarray:
    scaled = (image.astype(np.float32) - low) / max(high - low, 1e-6)
    return (np.clip(scaled, 0.0, 1.0) * 255).astype(np.uint8)


def write_overlay(path: str | os.PathLike, image: np.ndarray, labels: np.ndarray,
                  window: tuple[float, float] | None = None) -> Path:
    """An RGB PNG: the 2D image, (H, W) grey or (H, W, 3) colour (1st-99th percentile window unless ``window`` is
    given), with the lesion contour."""
    low, high = window if window is not None else np.percentile(image, (1, 99))
    gray = _to_gray8(image, float(low), float(high))
    rgb = np.ascontiguousarray(gray) if gray.ndim == 3 else np.repeat(gray[..., None], 3, axis=-1)
    mask = labels > 0
    thickness = max(1, round(max(image.shape) / 400))
    contour = mask & ~ndimage.binary_erosion(mask, iterations=thickness)
    rgb[contour] = CONTOUR_RGB
    with atomic_path(path) as tmp:
        Image.fromarray(rgb, mode="RGB").save(tmp)
    return Path(path)


def overlay_slices(labels: np.ndarray, count: int) -> list[int]:
    """Up to ``count`` slice indices of a (H, W, D) label map to show: those with the largest lesion area, in slice
    order; the middle slice when nothing was found."""
    if count < 1:
        return []
    area = (labels > 0).reshape(-1, labels.shape[-1]).sum(axis=0)
    found = np.flatnonzero(area)
    if found.size == 0:
        return [labels.shape[-1] // 2]
    top = found[np.argsort(-area[found], kind="stable")[:count]]
    return sorted(int(k) for k in top)
