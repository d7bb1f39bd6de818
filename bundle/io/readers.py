"""Loading a case into a single-channel float32 array and its geometry, chosen by the case's kind.

Layouts: (rows, cols) for a 2D image, (rows, cols, slices) for a volume with ``array[:, :, k]`` slice k. DICOM
slices come in order along the normal; NIfTI arrays as nibabel stores them; ITK images (NRRD, MetaImage) in ITK's
index order (x, y, z), so the same volume saved as NIfTI or as MetaImage gives the same array.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

from .dicom import DicomSource, read_dicom_series
from .discovery import Case
from .errors import CaseError
from .geometry import Geometry, itk_affine

__all__ = ["LoadedCase", "load_case", "select_channel"]

_GRAY_MODES = {"L", "I", "I;16", "I;16B", "I;16L", "F", "1"}
MAX_VOXELS = 1 << 28  # 268 M voxels (1 GiB as float32): larger inputs are refused before their data are read


@dataclass
class LoadedCase:
    """A case ready for the network: ``image`` float32 (H, W) or (H, W, D), or (H, W, 3) for a colour 2D image
    (``color``: read for a task whose network takes RGB, ``channel_index`` None), its geometry, and for DICOM the
    source headers that the SEG writer references."""

    case: Case
    image: np.ndarray
    geometry: Geometry
    dicom: DicomSource | None = None
    read_seconds: float = 0.0
    color: bool = False

    @property
    def is_volume(self) -> bool:
        return self.image.ndim == 3 and not self.color


def select_channel(shape: tuple[int, ...], channel_index: int, path: Path) -> tuple[int, ...] | None:
    """Spatial dims of ``shape`` and the channel axis to index, as ``None`` (no channel axis) or a tuple of the
    leading spatial dims. Raises :class:`CaseError` for a shape that is not 2D, 3D or 3D + channels."""
    if len(shape) in (2, 3):
        return None
    if len(shape) == 4:
        if not 0 <= channel_index < shape[3]:
            raise CaseError(path, f"channel_index {channel_index} is out of range for a 4D volume of shape {shape} "
                                  f"({shape[3]} channels on the last axis)")
        return shape[:3]
    raise CaseError(path, f"wrong dimensionality: expected a 2D image (H, W), a 3D volume (H, W, D) or a 4D volume "
                          f"with channels last (H, W, D, C); found shape {shape}")


def _check_size(path: Path, shape: tuple[int, ...]) -> None:
    if int(np.prod(shape, dtype=np.int64)) > MAX_VOXELS:
        raise CaseError(path, f"too large: shape {shape} holds more than {MAX_VOXELS} voxels; crop or downsample it "
                              "first (the network sees every slice resized to its input size anyway)")


def _read_nifti(path: Path, channel_index: int) -> tuple[np.ndarray, Geometry]:
    try:
        img = nib.load(path)
        shape = tuple(int(s) for s in img.shape)
    except Exception as err:  # nibabel raises ImageFileError, EOFError, zlib errors, ...
        raise CaseError(path, f"unreadable NIfTI file ({type(err).__name__}: {err})") from err
    if len(shape) == 5 and shape[3] == 1:  # NIfTI vector images store components on the 5th axis
        shape = (*shape[:3], shape[4])
    if len(shape) == 4 and shape[3] == 1:
        shape = shape[:3]
    _check_size(path, shape)
    time_unit = img.header.get_xyzt_units()[1] if hasattr(img.header, "get_xyzt_units") else "unknown"
    if len(shape) == 4 and len(img.shape) == 4 and time_unit != "unknown":
        step = float(img.header.get_zooms()[3])
        raise CaseError(path, f"4D NIfTI with a time axis ({shape[3]} time points, {step:g} {time_unit} apart): "
                              "expected one 3D volume (channels on a 4th axis carry no time unit)")
    spatial = select_channel(shape, channel_index, path)
    try:
        if spatial is None:
            data = np.asarray(img.dataobj, dtype=np.float32).reshape(shape)
        elif len(img.shape) == 5:
            data = np.asarray(img.dataobj[:, :, :, 0, channel_index], dtype=np.float32)
        else:
            data = np.asarray(img.dataobj[..., channel_index], dtype=np.float32)
    except Exception as err:
        raise CaseError(path, f"cannot read the voxel data ({type(err).__name__}: {err})") from err
    ndim = data.ndim
    zooms = tuple(float(z) for z in img.header.get_zooms()[:ndim])
    return data, Geometry(np.asarray(img.affine, dtype=float), zooms, nifti_header=img.header)


def _read_itk(path: Path, channel_index: int) -> tuple[np.ndarray, Geometry]:
    import itk  # slow to import: only when an NRRD / MetaImage file is met

    try:
        img = itk.imread(str(path))
        array = itk.array_from_image(img)
    except Exception as err:
        raise CaseError(path, f"unreadable image file for ITK ({type(err).__name__}: {err})") from err
    dims = int(img.GetImageDimension())
    components = int(img.GetNumberOfComponentsPerPixel())
    axes = tuple(reversed(range(dims))) + ((dims,) if components > 1 else ())
    array = np.asarray(array).transpose(axes)  # numpy (z, y, x[, c]) -> ITK index order (x, y, z[, c])
    if components > 1 and dims == 2:  # a colour 2D image: luminance
        array = array[..., :3] @ np.asarray([0.299, 0.587, 0.114]) if components >= 3 else array[..., 0]
    elif select_channel(array.shape, channel_index, path) is not None:
        array = array[..., channel_index]
    data = np.ascontiguousarray(array, dtype=np.float32)
    d = min(dims, 3)  # a 4D image's 4th axis became channels
    direction = np.asarray(img.GetDirection(), dtype=float).reshape(dims, dims)[:d, :d]
    spacing = np.asarray(img.GetSpacing(), dtype=float)[:d]
    affine = itk_affine(direction, spacing, np.asarray(img.GetOrigin(), dtype=float)[:d])
    return data, Geometry(affine, tuple(float(s) for s in spacing))


def _read_2d(path: Path, color: bool = False) -> tuple[np.ndarray, Geometry]:
    """A 2D image as float32 (H, W), luminance for colour files; with ``color`` as (H, W, 3) RGB (a grey image is
    repeated into the three channels)."""
    try:
        with Image.open(path) as img:
            frames = int(getattr(img, "n_frames", 1))
            if frames > 1:
                raise CaseError(path, f"{frames} pages/frames: expected one 2D image")
            img.load()
            mode = img.mode
            if color:
                img = img if mode == "RGB" else img.convert("RGB")  # palette, RGBA, L, ... -> RGB
            elif mode not in _GRAY_MODES:
                img = img.convert("L")  # RGB(A), palette, LA -> luminance
            data = np.asarray(img, dtype=np.float32)
    except CaseError:
        raise
    except Exception as err:  # PIL.UnidentifiedImageError, OSError on truncated files, ...
        raise CaseError(path, f"unreadable image file ({type(err).__name__}: {err})") from err
    if data.ndim != (3 if color else 2):
        raise CaseError(path, f"wrong dimensionality: expected a 2D image, found shape {data.shape} (mode {mode})")
    return data, Geometry(np.eye(4), (1.0, 1.0), spacing_known=False)


def load_case(case: Case, channel_index: int | None = 0) -> LoadedCase:
    """Read and validate ``case``.

    Args:
        case: from :func:`~bundle.io.discovery.discover_cases`.
        channel_index: channel taken from a multi-channel volume (H, W, D, C); RGB 2D images become luminance.
            ``None`` (a task whose network takes RGB images): 2D images are read as (H, W, 3) RGB, and volumes,
            which such a network cannot take, are refused.

    Raises:
        CaseError: the input is unreadable or not something the network can segment; names the file and why.
    """
    start = time.perf_counter()
    source = case.paths[0] if case.paths else case.root
    if case.error is not None:
        raise CaseError(source, case.error)
    dicom = None
    color = channel_index is None
    if color and case.kind != "image":
        raise CaseError(source, f"this task's network takes RGB 2D images, not a {case.kind} volume")
    if case.kind == "dicom":
        image, geometry, dicom = read_dicom_series(case.paths)
    elif case.kind == "nifti":
        image, geometry = _read_nifti(source, channel_index)
    elif case.kind == "itk":
        image, geometry = _read_itk(source, channel_index)
    elif case.kind == "image":
        image, geometry = _read_2d(source, color)
    else:
        raise CaseError(source, f"not an image case (kind {case.kind!r})")
    if image.ndim not in (2, 3) or min(image.shape[:2]) < 2:
        raise CaseError(source, f"wrong dimensionality: expected (H, W) or (H, W, D) with H, W >= 2, found "
                                f"{image.shape}")
    if not np.isfinite(image).all():
        raise CaseError(source, "the image holds NaN or infinite values")
    return LoadedCase(case, image, geometry, dicom, time.perf_counter() - start, color)
