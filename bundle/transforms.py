"""MONAI dictionary transforms specific to this bundle (named by the configs through ``_target_``)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import KeepLargestConnectedComponent, MapTransform, RandomizableTransform, Resized, SaveImage
from monai.utils import convert_to_dst_type

from .settings import as_bool, as_optional_probability, as_probability

__all__ = [
    "SelectChanneld", "RandColorJitterd", "ResizeInPlaned", "NeighbourSlicesd", "LesionFilterd", "KeepLargestLesiond",
    "LesionLabeld", "SaveLabeld", "keep_largest_lesion", "filter_lesions", "scores_to_label", "seeded_regions",
]


class SelectChanneld(MapTransform):
    """Keep one channel of a channel-first image that has several (e.g. FLAIR = 1 of LGG's pre/FLAIR/post stack);
    a single-channel image passes unchanged, so a lone FLAIR series from a scanner is a complete input.

    Args:
        keys: keys of the channel-first images.
        index: the channel to keep when there is more than one; ``None`` keeps every channel (RGB images).
        allow_missing_keys: do not fail on missing keys.

    Shapes: (C, *S) -> (1, *S); with ``index`` None unchanged.
    """

    def __init__(self, keys: KeysCollection, index: int | None = 0, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.index = index

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            channels = img.shape[0]
            if channels == 1 or self.index is None:
                continue
            if not -channels <= self.index < channels:
                source = getattr(img, "meta", {}).get("filename_or_obj", key)
                raise ValueError(f"{source}: channel {self.index} asked for, but the image has {channels} channels.")
            d[key] = img[self.index : self.index + 1]
        return d


_RGB_TO_YIQ = np.array([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])  # row 0: luma
_YIQ_TO_RGB = np.linalg.inv(_RGB_TO_YIQ)


class RandColorJitterd(RandomizableTransform, MapTransform):
    """Colour jitter of channel-first RGB images with values in [0, 1], as torchvision's ``ColorJitter`` (the
    paper's augmentation 6): with probability ``prob``, brightness, contrast, saturation and hue change by random
    factors, in random order; the result is clipped to [0, 1]. Images with another number of channels pass
    unchanged.

    - brightness: ``x * b``, b uniform in [1 - brightness, 1 + brightness];
    - contrast: ``mean + (x - mean) * c`` around the mean grey level;
    - saturation: ``grey + (x - grey) * s`` around each pixel's grey level (ITU-R 601 luma);
    - hue: the chroma rotated by ``2 pi h`` radians, h uniform in [-hue, hue] (a rotation in YIQ space).

    Args:
        keys: keys of (3, *S) images.
        brightness, contrast, saturation: jitter strengths in [0, 1).
        hue: in [0, 0.5].
        prob: probability of jittering an image.
    """

    def __init__(self, keys: KeysCollection, brightness: float = 0.2, contrast: float = 0.2, saturation: float = 0.2,
                 hue: float = 0.2, prob: float = 0.2, allow_missing_keys: bool = False) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        RandomizableTransform.__init__(self, prob)
        for name, value, top in (("brightness", brightness, 1), ("contrast", contrast, 1),
                                 ("saturation", saturation, 1), ("hue", hue, 0.5)):
            if not 0 <= value <= top:
                raise ValueError(f"{name} must be in [0, {top}], got {value}.")
        self.strengths = {"brightness": brightness, "contrast": contrast, "saturation": saturation, "hue": hue}

    @staticmethod
    def _jitter(x: torch.Tensor, name: str, factor: float) -> torch.Tensor:
        """One of the four changes on a (3, *S) float image; brightness, contrast and saturation blend the image
        with black, its mean grey level and its per-pixel grey level by ``factor``."""
        if name == "hue":
            cos, sin = np.cos(2 * np.pi * factor), np.sin(2 * np.pi * factor)
            rotate = np.array([[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]])
            matrix = torch.as_tensor(_YIQ_TO_RGB @ rotate @ _RGB_TO_YIQ, dtype=x.dtype)
            return torch.einsum("ij,j...->i...", matrix, x)
        grey = torch.einsum("j,j...->...", torch.as_tensor(_RGB_TO_YIQ[0], dtype=x.dtype), x)[None]
        anchor = {"brightness": torch.zeros_like(grey), "contrast": grey.mean(), "saturation": grey}[name]
        return anchor + (x - anchor) * factor

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        names = [list(self.strengths)[i] for i in self.R.permutation(4)]
        factors = {name: self.R.uniform(-v, v) if name == "hue" else self.R.uniform(1 - v, 1 + v)
                   for name, v in self.strengths.items()}
        for key in self.key_iterator(d):
            if d[key].shape[0] != 3:
                continue
            x = torch.as_tensor(d[key], dtype=torch.float32)
            for name in names:
                x = self._jitter(x, name, factors[name]).clamp(0.0, 1.0)
            d[key] = convert_to_dst_type(x, d[key])[0]
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


class NeighbourSlicesd(MapTransform):
    """2.5D input: each slice of a one-channel volume gets its ``context`` neighbours on either side as extra channels
    (slice ``z + j`` in channel ``context + j``, j = -context..context), so a 2D network sees the slices around the
    one it segments. At the ends of the volume the edge slice repeats. A 2D image (1, H, W) has no neighbours: it is
    repeated into every channel. ``context=0`` passes the data through.

    Args:
        keys: keys of one-channel, channel-first images (1, H, W) or volumes (1, H, W, D).
        context: neighbours on each side (the network then takes ``2 * context + 1`` input channels).

    Shapes: (1, H, W, D) -> (2 * context + 1, H, W, D); (1, H, W) -> (2 * context + 1, H, W).
    """

    def __init__(self, keys: KeysCollection, context: int = 1, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if isinstance(context, bool) or not isinstance(context, (int, np.integer)) or context < 0:
            raise ValueError(f"context_slices must be an int >= 0, got {context!r}.")
        self.context = int(context)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if self.context == 0:
            return d
        channels = 2 * self.context + 1
        for key in self.key_iterator(d):
            img = d[key]
            if img.shape[0] != 1:
                source = getattr(img, "meta", {}).get("filename_or_obj", key)
                raise ValueError(f"{source}: 2.5D input needs one channel, got shape {tuple(img.shape)}.")
            if img.ndim == 3:
                d[key] = img.repeat(channels, 1, 1)
                continue
            depth = img.shape[-1]
            offsets = torch.arange(-self.context, self.context + 1)
            index = (torch.arange(depth)[None] + offsets[:, None]).clamp(0, depth - 1)  # (channels, D)
            d[key] = torch.cat([img[..., index[c]] for c in range(channels)])
        return d


def filter_lesions(label: torch.Tensor, keep_largest: bool = False, min_size: int = 0) -> torch.Tensor:
    """Lesion voxels (label > 0) of ``label`` (class indices, any spatial shape) that survive the component filter:
    connected components (full connectivity: 8 neighbours in 2D, 26 in 3D) of fewer than ``min_size`` voxels are
    removed, and with ``keep_largest`` only the largest component is kept. Returns a bool mask of ``label``'s shape.
    """
    from scipy import ndimage

    mask = np.asarray(label.detach().cpu() if isinstance(label, torch.Tensor) else label) > 0
    if not mask.any() or (not keep_largest and min_size <= 1):
        return torch.as_tensor(mask)
    components, count = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, bool))
    sizes = np.bincount(components.ravel(), minlength=count + 1)
    sizes[0] = 0
    keep = sizes >= max(min_size, 1)
    if keep_largest:
        keep &= np.arange(count + 1) == int(sizes.argmax())
    keep[0] = False
    return torch.as_tensor(keep[components])


def seeded_regions(mask: torch.Tensor, seeds: torch.Tensor) -> torch.Tensor:
    """The connected regions of bool ``mask`` (full connectivity: 8 neighbours in 2D, 26 in 3D; any spatial shape)
    that hold at least one voxel of bool ``seeds``: a bool tensor of ``mask``'s shape and device."""
    from scipy import ndimage

    region = np.asarray(mask.detach().cpu())
    if not region.any():
        return mask.clone()
    components, count = ndimage.label(region, structure=np.ones((3,) * region.ndim, bool))
    keep = np.zeros(count + 1, bool)
    keep[np.unique(components[np.asarray(seeds.detach().cpu()) & region])] = True
    keep[0] = False
    return torch.as_tensor(keep[components], device=mask.device)


def scores_to_label(scores: torch.Tensor, threshold: float = 0.5, seed_threshold: float = 0.0) -> torch.Tensor:
    """Class indices (1, *S), in ``scores``' dtype, of per-class scores (K, *S) (probabilities or one-hot).

    At ``threshold`` 0.5 a voxel takes the class of the highest score (argmax; ties go to the lower class, as
    MONAI's ``AsDiscrete``). Otherwise the scores must be two classes (background, lesion), and a voxel is lesion
    when its lesion score exceeds ``threshold``: below 0.5 more voxels are lesion, above fewer.

    With ``seed_threshold`` above ``threshold`` (hysteresis), a lesion voxel stays lesion only when its connected
    lesion region (:func:`seeded_regions`, over all spatial axes, e.g. a whole volume) holds a voxel whose lesion score
    exceeds ``seed_threshold``: confident detections grow into their less certain surroundings, unconfident regions
    alone are dropped. ``seed_threshold <= threshold`` (e.g. the default 0) changes nothing.
    """
    if scores.shape[0] != 2:
        for name, value, off in (("lesion_threshold", threshold, threshold == 0.5),
                                 ("lesion_seed_threshold", seed_threshold, seed_threshold <= threshold)):
            if not off:
                raise ValueError(f"{name} {value} needs two classes (background, lesion); the scores have "
                                 f"{scores.shape[0]}. Use lesion_threshold 0.5 (argmax) and lesion_seed_threshold 0 "
                                 f"for more classes.")
    if threshold == 0.5:
        label = torch.argmax(scores, dim=0, keepdim=True).to(scores.dtype)
    else:
        label = (scores[1:2] > threshold).to(scores.dtype)
    if seed_threshold <= threshold:
        return label
    kept = seeded_regions(label[0] > 0, scores[1] > seed_threshold)
    return label * kept[None]  # bool mask: the dtype stays scores'


class LesionLabeld(MapTransform):
    """Per-class scores (K, *S) to class indices (1, *S) with a lesion probability threshold
    (:func:`scores_to_label`): the label step of inference and of validation (MONAI's ``AsDiscreted`` makes it
    one-hot where a metric needs that).

    Args:
        keys: keys of the scores, (K, *S) probabilities.
        threshold: lesion probability above which a voxel is lesion (``lesion_threshold``; 0.5 is argmax).
        seed_threshold: lesion probability one voxel of a connected lesion region must exceed for the region to be
            kept (``lesion_seed_threshold``; 0, or any value not above ``threshold``, keeps every region).
    """

    def __init__(self, keys: KeysCollection, threshold: float = 0.5, seed_threshold: float = 0.0,
                 allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.threshold = as_probability(threshold, "lesion_threshold")
        self.seed_threshold = as_optional_probability(seed_threshold, "lesion_seed_threshold")

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = scores_to_label(d[key], self.threshold, self.seed_threshold)
        return d


class LesionFilterd(MapTransform):
    """Remove connected lesion components by size: those smaller than ``min_size`` voxels and, with ``keep_largest``,
    all but the largest (a volume as a whole, in 3D). Removed voxels become background.

    Works on class-index labels (1, *S) and on per-class scores (K, *S): one-hot labels or probabilities, where a
    voxel is lesion as :func:`scores_to_label` decides with ``threshold``, and removed voxels get background score 1
    and foreground scores 0 (so filtering before an inverse resize removes the component at every resolution).

    Args:
        keys: keys of the predictions.
        keep_largest: keep only the largest component (``keep_largest_component``; ``"false"`` reads as false).
        min_size: smallest component kept, in voxels of the grid the filter runs on (``min_lesion_size``; 0 keeps all).
        scores: whether the data are per-class scores (K, *S) rather than class indices (1, *S).
        threshold: lesion probability above which a score voxel is lesion (``lesion_threshold``; 0.5 is argmax).
        seed_threshold: with ``scores``, lesion regions without a voxel above it are not lesion
            (``lesion_seed_threshold``, :func:`scores_to_label`; 0 keeps every region).
    """

    def __init__(
        self, keys: KeysCollection, keep_largest: bool = False, min_size: int = 0, scores: bool = False,
        threshold: float = 0.5, seed_threshold: float = 0.0, allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.keep_largest = as_bool(keep_largest, "keep_largest_component")
        if isinstance(min_size, bool) or not isinstance(min_size, (int, np.integer)) or min_size < 0:
            raise ValueError(f"min_lesion_size must be an int >= 0 (voxels), got {min_size!r}.")
        self.min_size = int(min_size)
        self.scores = scores
        self.threshold = as_probability(threshold, "lesion_threshold")
        self.seed_threshold = as_optional_probability(seed_threshold, "lesion_seed_threshold")

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        if not self.keep_largest and self.min_size <= 1:
            return d
        for key in self.key_iterator(d):
            pred = d[key]
            label = scores_to_label(pred, self.threshold, self.seed_threshold)[0] if self.scores else pred[0]
            removed = (label > 0) & ~filter_lesions(label, self.keep_largest, self.min_size).to(pred.device)
            if not removed.any():
                continue
            pred = pred.clone()
            if self.scores:
                pred[:, removed] = 0
                pred[0, removed] = 1
            else:
                pred[0, removed] = 0
            d[key] = pred
        return d


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
