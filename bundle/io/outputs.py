"""The output set of one case, and the lesion size that goes into the manifest.

Files, all named after the case id, in the output folder:
- ``<id>_label.nii.gz`` ("nifti"): the label map on the source grid (same shape and affine; DICOM: the series'
  physical space);
- ``<id>_seg.dcm`` ("dicom-seg", DICOM inputs only): a DICOM SEG referencing the source instances;
- ``<id>_label.png`` and ``<id>_overlay.png`` ("png", 2D inputs), ``<id>_overlay_s<k>.png`` ("png", a few slices of
  a volume: those with the most lesion);
- ``<id>_probabilities.nii.gz`` (``save_probabilities``): float32 class probabilities, classes on the last axis
  (spatial shape, then one axis of 1 for a 2D image, then classes).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .dicom_seg import write_dicom_seg
from .geometry import Geometry
from .readers import LoadedCase
from .writers import overlay_slices, write_nifti, write_overlay, write_png_label

__all__ = ["FORMATS", "OutputSettings", "write_case_outputs", "lesion_size"]

from . import FORMATS  # noqa: E402  (defined in the package, so that it loads without the writers)


@dataclass(frozen=True)
class OutputSettings:
    """What to write for each case (see the module docstring for the files)."""

    formats: tuple[str, ...] = FORMATS
    class_names: tuple[str, ...] = ("background", "lesion")
    save_probabilities: bool = False
    overlay_slices: int = 3
    software_version: str = "unknown"

    def __post_init__(self) -> None:
        unknown = sorted(set(self.formats) - set(FORMATS))
        if unknown or not self.formats:
            raise ValueError(f"formats must be a non-empty subset of {list(FORMATS)}, got {list(self.formats)}.")
        if len(self.class_names) < 2:
            raise ValueError(f"class_names needs background and at least one class, got {list(self.class_names)}.")
        if self.overlay_slices < 0:
            raise ValueError(f"overlay_slices must be >= 0, got {self.overlay_slices}.")


def lesion_size(labels: np.ndarray, geometry: Geometry) -> tuple[int, float | None, float | None]:
    """(foreground voxels, area in mm^2 for a 2D image, volume in ml for a volume), from the real spacing."""
    voxels = int(np.count_nonzero(labels))
    if labels.ndim == 2:
        return voxels, voxels * geometry.voxel_size, None
    return voxels, None, voxels * geometry.voxel_size / 1000.0


def _window(image: np.ndarray) -> tuple[float, float]:
    low, high = np.percentile(image, (1, 99))
    return float(low), float(high)


def write_case_outputs(output_dir: Path, loaded: LoadedCase, labels: np.ndarray, probabilities: np.ndarray | None,
                       settings: OutputSettings) -> list[str]:
    """Write the requested outputs of one case; returns their names relative to ``output_dir``."""
    stem = output_dir / loaded.case.case_id
    written: list[Path] = []
    formats = settings.formats
    if "nifti" in formats:
        written.append(write_nifti(f"{stem}_label.nii.gz", labels.astype(np.uint8), loaded.geometry))
    if "dicom-seg" in formats and loaded.dicom is not None:
        written.append(write_dicom_seg(f"{stem}_seg.dcm", labels, loaded.dicom, settings.class_names,
                                       settings.software_version))
    if "png" in formats:
        if labels.ndim == 2:
            written.append(write_png_label(f"{stem}_label.png", labels, len(settings.class_names)))
            written.append(write_overlay(f"{stem}_overlay.png", loaded.image, labels))
        else:
            window = _window(loaded.image)
            for k in overlay_slices(labels, settings.overlay_slices):
                path = f"{stem}_overlay_s{k:03d}.png"
                written.append(write_overlay(path, loaded.image[:, :, k], labels[:, :, k], window))
    if settings.save_probabilities and probabilities is not None:
        channels_last = np.moveaxis(probabilities.astype(np.float32, copy=False), 0, -1)
        if labels.ndim == 2:
            channels_last = channels_last[:, :, None, :]
        written.append(write_nifti(f"{stem}_probabilities.nii.gz", channels_last, loaded.geometry))
    return [p.relative_to(output_dir).as_posix() for p in written]
