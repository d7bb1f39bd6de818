r"""Store two or more weights files of one network as one ensemble weights file: the inference config then runs
every member and averages their class probabilities (``bundle.networks.ensemble``).

    python -m scripts.build_ensemble --weights models/model.pt run_a/model.pt run_b/model.pt \
        --output outputs/ensemble/model.pt

The inputs are read (digest-checked where they are shipped files) and never modified; the output is written
atomically and may not be one of them. Score it like any weights file: ``python -m scripts.reproduce_results --split
validation --weights <output>``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bundle.checkpoints import read_state_dict, save_weights
from bundle.networks.ensemble import ensemble_state_dict

logger = logging.getLogger("build_ensemble")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, nargs="+", required=True,
                        help="two or more weights files of the same network, in member order (read only)")
    parser.add_argument("--output", type=Path, required=True, help="the ensemble weights file to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    inputs = {path.resolve() for path in args.weights}
    if args.output.resolve() in inputs:
        parser.error(f"--output {args.output} is one of the input weights files; write the ensemble elsewhere.")
    if len(inputs) != len(args.weights):
        parser.error("a weights file is named twice; each member counts once in the ensemble.")
    try:
        states = [read_state_dict(path) for path in args.weights]
        ensemble = ensemble_state_dict(states, names=[str(path) for path in args.weights])
    except (ValueError, FileNotFoundError) as err:
        logger.error("%s", err)
        return 1
    save_weights(ensemble, args.output)
    logger.info("wrote %s: the ensemble of %s", args.output, ", ".join(str(p) for p in args.weights))
    return 0


if __name__ == "__main__":
    sys.exit(main())
