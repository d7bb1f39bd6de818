"""Deterministic synthetic lesion data in the project's dataset layouts, for the demo and the tests.

- ``lgg`` layout: ``SYN_<nnn>_image.nii.gz`` (uint8, H x W x D x 3: pre-contrast, FLAIR, post-contrast) with
  ``SYN_<nnn>_label.nii.gz`` (uint8, H x W x D): an ellipsoidal lesion, bright in FLAIR, inside an elliptical
  "head" with a smooth texture; some slices hold no lesion.
- ``busi`` layout: ``benign/benign_<n>.png`` (8-bit grayscale) with ``benign_<n>_mask.png`` (0 / 255): a dark
  elliptical lesion in speckle-like texture, and ``normal/normal_<n>.png`` with empty masks.
"""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
from PIL import Image

__all__ = ["make_synthetic_volume", "make_synthetic_image", "make_synthetic_polyp", "write_synthetic_lgg",
           "write_synthetic_busi", "write_synthetic_kvasir"]


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], passes: int = 3) -> np.ndarray:
    """Zero-mean, unit-ish noise smoothed by repeated neighbour averaging (no SciPy needed)."""
    x = rng.standard_normal(shape)
    for _ in range(passes):
        for axis in range(x.ndim):
            x = (np.roll(x, 1, axis) + x + np.roll(x, -1, axis)) / 3.0
    return x / (x.std() + 1e-8)


def _ellipse(grid: list[np.ndarray], centre: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Squared normalised distance of each voxel from ``centre`` (< 1 inside the ellipse/ellipsoid)."""
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True))


def make_synthetic_volume(shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic MRI case: image uint8 (H, W, D, 3) and label uint8 (H, W, D) with values {0, 1}."""
    rng = np.random.default_rng(seed)
    h, w, d = shape
    grid = list(np.meshgrid(np.arange(h), np.arange(w), np.arange(d), indexing="ij"))
    head = _ellipse(grid[:2], np.array([h / 2, w / 2]), np.array([0.42 * h, 0.38 * w])) < 1.0
    centre = np.array([rng.uniform(0.35, 0.65) * h, rng.uniform(0.35, 0.65) * w, rng.uniform(0.35, 0.65) * d])
    radii = np.array([rng.uniform(0.08, 0.16) * h, rng.uniform(0.08, 0.16) * w, rng.uniform(0.2, 0.3) * d])
    lesion = (_ellipse(grid, centre, radii) < 1.0) & head
    texture = _smooth_noise(rng, shape)
    channels = []
    for contrast in (0.0, 1.0, 0.3):  # lesion brightness per sequence: FLAIR (index 1) shows it best
        img = np.where(head, 90.0 + 12.0 * texture, 5.0) + contrast * 90.0 * lesion
        channels.append(np.clip(img + rng.normal(0, 3.0, shape), 0, 255))
    return np.stack(channels, -1).astype(np.uint8), lesion.astype(np.uint8)


def make_synthetic_image(shape: tuple[int, int], seed: int, lesion: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic ultrasound image: uint8 (H, W) and mask uint8 (H, W) with values {0, 255}."""
    rng = np.random.default_rng(seed)
    h, w = shape
    grid = list(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"))
    img = 110.0 + 25.0 * _smooth_noise(rng, shape, passes=2) - 0.15 * grid[0]  # darker with depth
    mask = np.zeros(shape, dtype=bool)
    if lesion:
        centre = np.array([rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w])
        radii = np.array([rng.uniform(0.1, 0.2) * h, rng.uniform(0.12, 0.25) * w])
        mask = _ellipse(grid, centre, radii) < 1.0
        img = np.where(mask, 35.0 + 8.0 * _smooth_noise(rng, shape, passes=1), img)
    img = img * rng.gamma(8.0, 1 / 8.0, shape)  # speckle
    return np.clip(img, 0, 255).astype(np.uint8), (mask * 255).astype(np.uint8)


def make_synthetic_polyp(shape: tuple[int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic colonoscopy frame: RGB uint8 (H, W, 3), pinkish mucosa with a redder, brighter polyp, and its
    mask uint8 (H, W) with values {0, 255}."""
    rng = np.random.default_rng(seed)
    h, w = shape
    grid = list(np.meshgrid(np.arange(h), np.arange(w), indexing="ij"))
    centre = np.array([rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w])
    radii = np.array([rng.uniform(0.12, 0.25) * h, rng.uniform(0.12, 0.25) * w])
    mask = _ellipse(grid, centre, radii) < 1.0
    texture = 20.0 * _smooth_noise(rng, shape, passes=2)
    mucosa = np.stack([170.0 + texture, 90.0 + texture, 80.0 + 0.5 * texture], axis=-1)
    polyp = np.stack([215.0 + texture, 70.0 + 0.5 * texture, 60.0 + 0.5 * texture], axis=-1)
    image = np.where(mask[..., None], polyp, mucosa) * rng.uniform(0.9, 1.1)
    return np.clip(image, 0, 255).astype(np.uint8), (mask * 255).astype(np.uint8)


def write_synthetic_kvasir(root: str | os.PathLike, n_cases: int = 8, shape: tuple[int, int] = (72, 88),
                           seed: int = 0) -> Path:
    """Write synthetic cases in the ``kvasir`` layout: ``images/<id>.jpg`` (RGB) and ``masks/<id>.jpg`` (JPEG, so
    with compression noise around 0 and 255, as the real masks)."""
    root = Path(root)
    for folder in ("images", "masks"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    for i in range(n_cases):
        image, mask = make_synthetic_polyp(shape, seed * 1000 + i)
        Image.fromarray(image).save(root / "images" / f"cju{i:04d}.jpg", quality=90)
        Image.fromarray(np.repeat(mask[..., None], 3, -1)).save(root / "masks" / f"cju{i:04d}.jpg", quality=75)
    return root


def write_synthetic_lgg(
    root: str | os.PathLike, n_cases: int = 6, shape: tuple[int, int, int] = (64, 64, 12), seed: int = 0,
    spacing: tuple[float, float, float] = (0.9, 0.9, 3.0),
) -> Path:
    """Write ``n_cases`` synthetic volumes in the ``lgg`` layout under ``root`` (affine: ``spacing``, with an
    origin offset) and return ``root``. The same arguments always give byte-identical arrays."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = (-100.0, -110.0, -20.0)
    for i in range(n_cases):
        image, label = make_synthetic_volume(shape, seed * 1000 + i)
        nib.save(nib.Nifti1Image(image, affine), root / f"SYN_{i:03d}_image.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / f"SYN_{i:03d}_label.nii.gz")
    return root


def write_synthetic_busi(
    root: str | os.PathLike, n_lesion: int = 10, n_normal: int = 2, shape: tuple[int, int] = (80, 96), seed: int = 0
) -> Path:
    """Write synthetic 2D cases in the ``busi`` layout (``benign/`` with lesions, ``normal/`` without)."""
    root = Path(root)
    for cls, count, has_lesion in (("benign", n_lesion, True), ("normal", n_normal, False)):
        folder = root / cls
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(1, count + 1):
            image, mask = make_synthetic_image(shape, seed * 1000 + i + (500 if cls == "normal" else 0), has_lesion)
            Image.fromarray(image).save(folder / f"{cls}_{i}.png")
            Image.fromarray(mask).save(folder / f"{cls}_{i}_mask.png")
    return root
