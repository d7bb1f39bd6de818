"""Segment every case in a folder (DICOM series, NIfTI / NRRD / MetaImage volumes, PNG / JPEG / TIFF images).

Usage (from the repository root):
    python -m scripts.predict --input IN --output OUT [--task lgg|busi] [--device auto] [--continue]
                              [--formats nifti,dicom-seg,png] [--save-probabilities] [--quiet]
    python -m scripts.predict --input IN --output OUT --num-parts 8 --part-id 3   # one of 8 cluster jobs
    python -m scripts.predict --output OUT --merge-manifests                     # after all parts finished
    python -m scripts.predict --input IN --output OUT --tta_flips "[]" --roi_size "[256,256]"  # inference settings

The named settings of the inference config (``--roi_size``, ``--tta_flips``, ``--intensity_percentiles``,
``--keep_largest_component``, ``--min_lesion_size``, ``--lesion_threshold``, ``--lesion_seed_threshold``,
``--channel_index``, ``--sw_batch_size``, ...) and any other config id (``--set ID=VALUE``) are read as
``monai.bundle run`` reads them and change the predictor exactly as they change ``monai.bundle run --config_file
configs/inference.json``.

Writes per case a label map on the source grid, a DICOM SEG for DICOM input, PNG overlays, and manifest.csv /
manifest.json (one row per case, with the reason of each failure) plus arguments.json. Exit code 0 when every case
succeeded, 1 when any failed, 2 for a usage error.
"""

from __future__ import annotations

import argparse
import logging

from fire.parser import DefaultParseValue

from bundle.io import FORMATS
from bundle.tasks import TASKS

logger = logging.getLogger("scripts.predict")

# the inference config's named settings, as command-line flags of the same name (values parsed as monai.bundle run
# parses them: python-fire)
CONFIG_SETTINGS = ("roi_size", "sw_batch_size", "tta_flips", "intensity_percentiles", "keep_largest_component",
                   "min_lesion_size", "lesion_threshold", "lesion_seed_threshold", "channel_index", "context_slices",
                   "amp", "runtime", "precision")


def _formats(text: str) -> tuple[str, ...]:
    formats = tuple(f.strip() for f in text.split(",") if f.strip())
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown or not formats:
        raise argparse.ArgumentTypeError(f"expected a comma-separated subset of {','.join(FORMATS)}, got {text!r}")
    return formats


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", help="input folder(s) and/or file(s)")
    parser.add_argument("--output", required=True, help="output folder (never inside an input folder)")
    parser.add_argument("--task", default="lgg", choices=sorted(TASKS), help="segmentation task (default lgg)")
    parser.add_argument("--bundle-root", default=".", help="bundle folder holding the weights (default .)")
    parser.add_argument("--weights", default=None, help="weights file (default: the task's file in the bundle)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, cuda:1, ...")
    parser.add_argument("--formats", type=_formats, default=FORMATS, help="outputs (default nifti,dicom-seg,png)")
    parser.add_argument("--save-probabilities", action="store_true", help="also write class probabilities")
    parser.add_argument("--overlay-slices", type=int, default=3, help="PNG overlays per volume (default 3)")
    parser.add_argument("--continue", dest="continue_prediction", action="store_true",
                        help="skip cases a previous run finished for the same input and settings")
    parser.add_argument("--num-parts", type=int, default=1, help="split the cases into this many parts")
    parser.add_argument("--part-id", type=int, default=0, help="the part this job runs, 0-based")
    parser.add_argument("--merge-manifests", action="store_true", help="join the part manifests in --output")
    parser.add_argument("--num-readers", type=int, default=2, help="reader threads (default 2)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar, warnings only")
    config = parser.add_argument_group("inference config settings (default: the task's configs)")
    for name in CONFIG_SETTINGS:
        config.add_argument(f"--{name}", dest=f"config:{name}", type=DefaultParseValue, metavar="VALUE")
    config.add_argument("--set", action="append", default=[], metavar="ID=VALUE", dest="config_set",
                        help="any other config id, e.g. --set sw_batch_size=8")
    return parser


def config_overrides(args: argparse.Namespace) -> dict:
    """The config settings given on the command line, ``{config id: value}``.

    Raises:
        ValueError: a ``--set`` item without ``=``.
    """
    overrides = {name: getattr(args, f"config:{name}") for name in CONFIG_SETTINGS
                 if getattr(args, f"config:{name}") is not None}
    for item in args.config_set:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected ID=VALUE.")
        overrides[key] = DefaultParseValue(value)
    return overrides


def _merge(output: str) -> int:
    from bundle.io import merge_manifests

    records, problems = merge_manifests(output)
    for problem in problems:
        logger.error("%s", problem)
    failed = sum(r.status == "failed" for r in records)
    logger.info("merged %d case(s), %d failed, into %s/manifest.csv", len(records), failed, output)
    return 1 if failed or problems else 0


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(levelname)s %(message)s")
    logging.getLogger("highdicom").setLevel(logging.WARNING)
    if args.merge_manifests:
        return _merge(args.output)
    if not args.input:
        parser.error("--input is required unless --merge-manifests is given")
    settings = {"formats": args.formats, "save_probabilities": args.save_probabilities,
                "overlay_slices": args.overlay_slices, "continue_prediction": args.continue_prediction,
                "num_parts": args.num_parts, "part_id": args.part_id, "num_readers": args.num_readers,
                "quiet": args.quiet}
    from bundle.predictor import Predictor  # imported here: --help and usage errors stay fast

    try:
        predictor = Predictor.from_bundle(args.bundle_root, args.task, args.device, args.weights,
                                          config_overrides(args), **settings)
        records = predictor.predict_files(args.input, args.output)
    except (ValueError, FileNotFoundError, NotADirectoryError) as err:
        logger.error("%s", err)
        return 2
    return 1 if any(r.status == "failed" for r in records) else 0


if __name__ == "__main__":
    raise SystemExit(main())
