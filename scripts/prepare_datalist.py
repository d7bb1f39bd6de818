"""Write a datalist JSON (seeded 0.8 / 0.1 / 0.1 split by patient or case) for a dataset folder.

    python -m scripts.prepare_datalist --dataset-dir ../shared/data/lgg --output outputs/lgg_datalist.json
"""

from __future__ import annotations

import argparse
import logging

from bundle.data.datalist import LAYOUTS, build_datalist, write_datalist


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset-dir", required=True, help="folder in the busi, lgg or kvasir layout")
    parser.add_argument("--output", required=True, help="datalist JSON to write")
    parser.add_argument("--layout", default="auto", choices=("auto", *LAYOUTS))
    parser.add_argument("--fractions", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VAL", "TEST"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    datalist = build_datalist(args.dataset_dir, args.layout, args.fractions, args.seed)
    path = write_datalist(datalist, args.output)
    counts = ", ".join(f"{k}: {len(datalist[k])}" for k in ("training", "validation", "test"))
    logging.info("wrote %s (%s)", path, counts)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
