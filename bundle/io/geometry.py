"""Where an image's voxels are in the patient: one affine for every input format.

``Geometry.affine`` maps array indices (i, j[, k]) to NIfTI world coordinates (RAS+, mm), the convention of
nibabel. DICOM and ITK describe space in LPS+, so their matrices are flipped on x and y on the way in.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Geometry", "LPS_TO_RAS", "dicom_affine", "itk_affine"]

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass
class Geometry:
    """Geometry of a loaded image.

    Attributes:
        affine: 4 x 4 voxel-index -> RAS+ mm matrix (for a 2D image, k is a unit step along the slice normal).
        spacing: voxel size in mm along each array axis (2 values for a 2D image, 3 for a volume).
        spacing_known: False when the file gives no spacing and 1 mm is assumed (PNG, JPEG, most TIFFs).
        nifti_header: the source NIfTI header, so labels keep its codes and units; ``None`` for other inputs.
    """

    affine: np.ndarray
    spacing: tuple[float, ...]
    spacing_known: bool = True
    nifti_header: Any | None = field(default=None, repr=False)

    @property
    def voxel_size(self) -> float:
        """Area of one pixel (mm^2) for a 2D image, volume of one voxel (mm^3) for a volume."""
        return float(np.prod(self.spacing))

    def describe_spacing(self) -> str:
        text = " x ".join(f"{s:.4g}" for s in self.spacing) + " mm"
        return text if self.spacing_known else text + " (assumed: the file gives no spacing)"


def dicom_affine(iop: np.ndarray, spacing: np.ndarray, origin: np.ndarray, step: np.ndarray) -> np.ndarray:
    """RAS+ affine of a DICOM stack indexed [row, column, slice].

    Args:
        iop: ImageOrientationPatient: direction of increasing column index (along a row), then of increasing row
            index (down a column), LPS.
        spacing: PixelSpacing: (distance between rows, distance between columns) in mm.
        origin: ImagePositionPatient of the first slice's first pixel, LPS mm.
        step: LPS vector from one slice's first pixel to the next slice's.
    """
    iop = np.asarray(iop, dtype=float)
    lps = np.eye(4)
    lps[:3, 0] = iop[3:] * float(spacing[0])  # array axis 0 = rows advance down the columns
    lps[:3, 1] = iop[:3] * float(spacing[1])  # array axis 1 = columns advance along the rows
    lps[:3, 2] = np.asarray(step, dtype=float)
    lps[:3, 3] = np.asarray(origin, dtype=float)
    return LPS_TO_RAS @ lps


def itk_affine(direction: np.ndarray, spacing: np.ndarray, origin: np.ndarray) -> np.ndarray:
    """RAS+ affine of an ITK image indexed [x, y(, z)] (ITK's index order, not numpy's)."""
    dims = len(spacing)
    lps = np.eye(4)
    lps[:dims, :dims] = np.asarray(direction, dtype=float).reshape(dims, dims) * np.asarray(spacing, dtype=float)
    lps[:dims, 3] = np.asarray(origin, dtype=float)
    return LPS_TO_RAS @ lps
