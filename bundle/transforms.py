"""MONAI dictionary transforms specific to this bundle (named by the configs through ``_target_``)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import KeepLargestConnectedComponent, MapTransform, Resized, SaveImage

from .settings import as_bool

__all__ = ["SelectChanneld", "ResizeInPlaned", "KeepLargestLesiond", "SaveLabeld", "keep_largest_lesion"]


class SelectChanneld(MapTransform):
    """Keep one channel of a channel-first image that has several (e.g. FLAIR = 1 of LGG's pre/FLAIR/post stack);
    a single-channel image passes unchanged, so a lone FLAIR series from a scanner is a complete input.

    Args:
        keys: keys of the channel-first images.
        index: the channel to keep when there is more than one.
        allow_missing_keys: do not fail on missing keys.

    Shapes: (C, *S) -> (1, *S).
    """

    def __init__(self, keys: KeysCollection, index: int = 0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.index = index

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            channels = img.shape[0]
            if channels == 1:
                continue
            if not -channels <= self.index < channels:
                source = getattr(img, "meta", {}).get("filename_or_obj", key)
                raise ValueError(f"{source}: channel {self.index} asked for, but the image has {channels} channels.")
            d[key] = img[self.index : self.index + 1]
        return d


class ResizeInPlaned(Resized):
    """Resize the first two spatial dimensions to ``spatial_size`` (H, W) and keep any further ones (slices), so
    one config handles 2D images (C, H, W) and volumes (C, H, W, D) alike. Invertible like ``Resized``.

    Args:
        keys: keys to resize.
        spatial_size: target (H, W) in pixels.
        mode: interpolation per key ("bilinear" for images, "nearest" for labels), as ``Resized``.
        kwargs: the other arguments of ``monai.transforms.Resized``.
    """

    def __init__(self, keys: KeysCollection, spatial_size: Sequence[int], mode="bilinear", **kwargs) -> None:
        if len(spatial_size) != 2 or min(spatial_size) < 1:
            raise ValueError(f"spatial_size must be two positive ints (H, W), got {spatial_size!r}.")
        super().__init__(keys, spatial_size=tuple(spatial_size), mode=mode, **kwargs)
        self.in_plane = tuple(int(s) for s in spatial_size)

    def __call__(self, data: Mapping[Hashable, torch.Tensor], lazy: bool | None = None) -> dict[Hashable, torch.Tensor]:
        for key in self.key_iterator(dict(data)):
            extra = data[key].ndim - 3  # channel + H + W, then slices
            self.resizer.spatial_size = self.in_plane + (-1,) * max(extra, 0)
            break
        return super().__call__(data, lazy=lazy)


def keep_largest_lesion(label: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Keep the largest connected lesion (class 1) component of a label map without channel dimension, (H, W) or
    (H, W, D) (full connectivity: 8 neighbours in 2D, 26 in 3D); other lesion voxels become background."""
    kept = KeepLargestConnectedComponent(applied_labels=[1], is_onehot=False)(label[None])
    return kept[0]


class KeepLargestLesiond(MapTransform):
    """Keep only the largest connected lesion component of label maps (a volume as a whole, in 3D), when enabled.

    A low-grade glioma's FLAIR abnormality is one connected region; scattered false positives elsewhere in the
    volume are removed (on the LGG validation patients this raised the mean lesion Dice, see docs/README.md).

    Args:
        keys: label keys, channel first: (1, *S) class indices, or (K, *S) one-hot when ``is_onehot``.
        enabled: ``False`` (or ``"false"``, as the command line passes it) passes the data through (the task
            setting ``keep_largest_component``).
        is_onehot: whether the labels are one-hot (the evaluators' form) rather than class indices.
    """

    def __init__(
        self, keys: KeysCollection, enabled: bool = True, is_onehot: bool = False, allow_missing_keys: bool = False
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.enabled = as_bool(enabled, "keep_largest_component")
        self.transform = KeepLargestConnectedComponent(applied_labels=[1], is_onehot=is_onehot)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if self.enabled:
            for key in self.key_iterator(d):
                d[key] = self.transform(d[key])
        return d


class SaveLabeld(MapTransform):
    """Write label maps with MONAI's ``SaveImage``: 2D labels as PNG (class index x ``png_scale``, rows x cols as
    the input PNG), volumes as NIfTI (class indices, with the source image's affine from the meta data).

    Args:
        keys: label keys, channel first (1, H, W) or (1, H, W, D), already inverted to the source geometry.
        output_dir: folder for the outputs (created).
        output_postfix: appended to the source file name (``<name>_<postfix>.png`` / ``.nii.gz``).
        png_scale: multiplier for PNG values so a binary mask is visible (0 / 255); NIfTI keeps class indices.
    """

    def __init__(
        self, keys: KeysCollection, output_dir: str, output_postfix: str = "seg", png_scale: int = 255,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        common = {"output_dir": output_dir, "output_postfix": output_postfix, "separate_folder": False,
                  "resample": False, "print_log": False}
        self.png_scale = png_scale
        self.png_saver = SaveImage(output_ext=".png", output_dtype=np.uint8, writer="PILWriter", **common)
        self.png_saver.set_options(write_kwargs={"reverse_indexing": False})
        self.nifti_saver = SaveImage(output_ext=".nii.gz", output_dtype=np.uint8, writer="NibabelWriter", **common)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            label = d[key]
            if label.ndim == 3:  # (1, H, W): a 2D image
                self.png_saver(label * self.png_scale)
            elif label.ndim == 4:
                self.nifti_saver(label)
            else:
                raise ValueError(f"{key}: expected a (1, H, W) or (1, H, W, D) label, got shape {tuple(label.shape)}.")
        return d
