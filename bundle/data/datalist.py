"""Turn a dataset folder into a MONAI datalist JSON with a seeded train / validation / test split by patient or case.

Layouts:
- ``busi``: ``<class>/<class>_<n>.png`` with ``<class>_<n>_mask.png`` (split by case, stratified by class folder).
- ``lgg``: ``<case>_image.nii.gz`` with ``<case>_label.nii.gz`` (split by patient: ``TCGA_XX_NNNN`` of the case id).
- ``kvasir``: ``images/<id>.<ext>`` with ``masks/<id>.<ext>`` (split by case).
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ..fileio import atomic_path
from ..suffixes import image_kind

__all__ = [
    "LabelledPair", "LAYOUTS", "detect_layout", "find_cases", "split_cases", "build_datalist", "write_datalist",
    "select_splits",
]

logger = logging.getLogger(__name__)

LAYOUTS = ("busi", "lgg", "kvasir")


@dataclass(frozen=True)
class LabelledPair:
    """One image/label pair. Paths are relative to the dataset folder; ``group`` is the unit of splitting
    (the patient), ``stratum`` keeps class proportions equal across splits."""

    case_id: str
    image: str
    label: str
    group: str
    stratum: str = ""


def detect_layout(dataset_dir: str | os.PathLike) -> str:
    """Guess the layout of ``dataset_dir`` from its files; raises ``ValueError`` if none fits."""
    root = Path(dataset_dir)
    if not root.is_dir():
        raise ValueError(f"dataset_dir {root} is not a folder.")
    if (root / "images").is_dir() and (root / "masks").is_dir():
        return "kvasir"
    if any(root.glob("*_label.nii*")):
        return "lgg"
    if any(root.glob("*/*_mask.png")):
        return "busi"
    raise ValueError(
        f"dataset_dir {root}: no known layout found (expected images/ + masks/, *_image.nii.gz + *_label.nii.gz, "
        "or <class>/<name>.png + <name>_mask.png)."
    )


def _busi_cases(root: Path) -> list[LabelledPair]:
    cases = []
    for mask in sorted(root.glob("*/*_mask.png")):
        image = mask.with_name(mask.name[: -len("_mask.png")] + ".png")
        if not image.is_file():
            raise ValueError(f"mask {mask} has no image {image.name} beside it.")
        case_id = image.stem
        rel = image.relative_to(root).as_posix()
        cases.append(LabelledPair(case_id, rel, mask.relative_to(root).as_posix(), case_id, image.parent.name))
    return cases


def _lgg_cases(root: Path) -> list[LabelledPair]:
    cases = []
    for label in sorted(root.glob("*_label.nii*")):
        suffix = "".join(label.suffixes[-2:]) if label.name.endswith(".nii.gz") else label.suffix
        case_id = label.name[: -len("_label" + suffix)]
        image = root / f"{case_id}_image{suffix}"
        if not image.is_file():
            raise ValueError(f"label {label} has no image {image.name} beside it.")
        match = re.match(r"(TCGA_[A-Z0-9]+_[A-Z0-9]+)", case_id)
        group = match.group(1) if match else case_id
        cases.append(LabelledPair(case_id, image.name, label.name, group))
    return cases


def _kvasir_cases(root: Path) -> list[LabelledPair]:
    cases = []
    masks = {p.stem: p for p in (root / "masks").iterdir() if image_kind(p) == "image"}
    for image in sorted((root / "images").iterdir()):
        if image_kind(image) != "image":
            continue
        if image.stem not in masks:
            raise ValueError(f"image {image} has no mask {image.stem}.* in {root / 'masks'}.")
        rel_mask = masks[image.stem].relative_to(root).as_posix()
        cases.append(LabelledPair(image.stem, image.relative_to(root).as_posix(), rel_mask, image.stem))
    return cases


def find_cases(dataset_dir: str | os.PathLike, layout: str = "auto") -> list[LabelledPair]:
    """All cases of ``dataset_dir`` in ``layout`` ("auto" detects it), sorted by case id."""
    root = Path(dataset_dir)
    layout = detect_layout(root) if layout == "auto" else layout
    finders = {"busi": _busi_cases, "lgg": _lgg_cases, "kvasir": _kvasir_cases}
    if layout not in finders:
        raise ValueError(f"layout must be 'auto' or one of {LAYOUTS}, got {layout!r}.")
    cases = finders[layout](root)
    if not cases:
        raise ValueError(f"dataset_dir {root}: no {layout} cases found.")
    return sorted(cases, key=lambda c: c.case_id)


def split_cases(
    cases: Sequence[LabelledPair], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, list[LabelledPair]]:
    """Seeded split into ``training`` / ``validation`` / ``test`` by group (a patient never spans two splits),
    stratified by ``LabelledPair.stratum``. Each split of a stratum with >= 3 groups gets at least one group."""
    if len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {tuple(fractions)}.")
    by_stratum: dict[str, dict[str, list[LabelledPair]]] = defaultdict(lambda: defaultdict(list))
    for case in cases:
        by_stratum[case.stratum][case.group].append(case)
    splits: dict[str, list[LabelledPair]] = {"training": [], "validation": [], "test": []}
    rng = random.Random(seed)
    for stratum in sorted(by_stratum):
        groups = sorted(by_stratum[stratum])
        rng.shuffle(groups)
        n = len(groups)
        n_val = max(1, round(fractions[1] * n)) if n >= 3 and fractions[1] > 0 else 0
        n_test = max(1, round(fractions[2] * n)) if n >= 3 and fractions[2] > 0 else 0
        n_train = n - n_val - n_test
        for name, chosen in (("training", groups[:n_train]), ("validation", groups[n_train : n_train + n_val]),
                             ("test", groups[n_train + n_val :])):
            for group in chosen:
                splits[name].extend(by_stratum[stratum][group])
    for name in splits:
        splits[name].sort(key=lambda c: c.case_id)
    return splits


def build_datalist(
    dataset_dir: str | os.PathLike, layout: str = "auto", fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict:
    """The datalist dict: ``training`` / ``validation`` / ``test`` lists of ``{"image", "label", "case_id"}`` with
    paths relative to ``dataset_dir``, plus the settings that produced it."""
    root = Path(dataset_dir)
    layout = detect_layout(root) if layout == "auto" else layout
    splits = split_cases(find_cases(root, layout), fractions, seed)
    datalist: dict = {"layout": layout, "seed": seed, "fractions": list(fractions)}
    for name, cases in splits.items():
        datalist[name] = [{"image": c.image, "label": c.label, "case_id": c.case_id} for c in cases]
    logger.info("%s: %s", root, {k: len(v) for k, v in splits.items()})
    return datalist


def write_datalist(datalist: dict, path: str | os.PathLike) -> Path:
    """Write ``datalist`` as 4-space-indented JSON, atomically."""
    path = Path(path)
    with atomic_path(path) as tmp:  # a unique temporary name: DDP ranks may write the same datalist at once
        tmp.write_text(json.dumps(datalist, indent=4) + "\n")
    return path


def load_datalist(
    path: str | os.PathLike, dataset_dir: str | os.PathLike, layout: str = "auto", seed: int = 0
) -> dict[str, list[dict]]:
    """Read the datalist at ``path`` (building and writing it from ``dataset_dir`` first when it is missing, or
    when it was built automatically from another folder) and return it with paths joined to ``dataset_dir``.

    Returns:
        ``{"training": [...], "validation": [...], "test": [...]}``, items ``{"image", "label", "case_id"}``.
    """
    path = Path(path)
    root = Path(dataset_dir).resolve()
    data = json.loads(path.read_text()) if path.is_file() else None
    if data is not None and data.get("dataset_dir") not in (None, str(root)):
        logger.warning("datalist %s was built for %s, not %s: building a new one", path, data["dataset_dir"], root)
        data = None
    if data is None:
        data = build_datalist(root, layout, seed=seed)
        data["dataset_dir"] = str(root)
        write_datalist(data, path)
    out: dict[str, list[dict]] = {}
    for split in ("training", "validation", "test"):
        items = data.get(split, [])
        out[split] = [{**item, **{k: str(root / item[k]) for k in ("image", "label") if k in item}} for item in items]
    return out


def select_splits(data: dict[str, list[dict]], splits: str | Sequence[str]) -> list[dict]:
    """The items of the named splits of ``data`` (a :func:`load_datalist` result), in order: the configs'
    ``training_splits`` (``["training"]``; ``["training", "validation"]`` refits a final model on both once the
    number of epochs was chosen on the validation split).

    Raises:
        ValueError: a split name that ``data`` does not have, or no split named.
    """
    names = [splits] if isinstance(splits, str) else list(splits)
    if not names:
        raise ValueError("no datalist split named to train on (training_splits is empty).")
    unknown = [name for name in names if name not in data]
    if unknown:
        raise ValueError(f"datalist has no split {unknown}: it has {sorted(data)}.")
    if "validation" in names:
        logger.warning(
            "training on the validation split too: the validation Dice no longer measures unseen cases, so take the "
            "final weights (checkpoints/model_final.pt), not the best-validation ones."
        )
    return [item for name in names for item in data[name]]
