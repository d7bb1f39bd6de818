"""The one table of image file suffixes the bundle reads, and name helpers built on it (standard library only, so the
MONAI Label environment imports it too)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["IMAGE_SUFFIXES", "IMAGE_2D_SUFFIXES", "image_kind", "strip_image_suffix"]

# lower-case suffix -> reader kind: "nifti" (nibabel), "itk" (NRRD, MetaImage), "image" (2D: Pillow)
IMAGE_SUFFIXES: dict[str, str] = {
    ".nii": "nifti", ".nii.gz": "nifti",
    ".nrrd": "itk", ".nhdr": "itk", ".mha": "itk", ".mhd": "itk",
    ".png": "image", ".jpg": "image", ".jpeg": "image", ".tif": "image", ".tiff": "image", ".bmp": "image",
}
IMAGE_2D_SUFFIXES = tuple(suffix for suffix, kind in IMAGE_SUFFIXES.items() if kind == "image")
_LONGEST_FIRST = sorted(IMAGE_SUFFIXES, key=len, reverse=True)


def image_kind(name: str | Path) -> str | None:
    """The reader kind of a file by its name's suffix (case-insensitive), or ``None`` for another suffix."""
    lower = Path(name).name.lower()
    return next((IMAGE_SUFFIXES[s] for s in _LONGEST_FIRST if lower.endswith(s)), None)


def strip_image_suffix(name: str) -> str:
    """``name`` without its image suffix (the longest one it ends with, case-insensitive; otherwise without its last
    suffix): ``x_image.nii.gz`` -> ``x_image``."""
    lower = name.lower()
    for suffix in _LONGEST_FIRST:
        if lower.endswith(suffix):
            return name[: -len(suffix)]
    return Path(name).stem
