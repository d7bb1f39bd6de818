r"""Average two or more weights files of one network uniformly (a "model soup": every parameter and batch-norm
statistic the plain mean of its copies) and write the result as a new weights file.

    python -m scripts.average_weights --weights run_0/model_final.pt run_a/model_final.pt run_b/model_final.pt \
        --output outputs/soup/model.pt

The inputs are read (digest-checked where they are shipped files) and never modified; the output is written
atomically and may not be one of them. Re-estimate the averaged batch-norm statistics with ``scripts.recalibrate_bn``
and score either file with ``python -m scripts.reproduce_results --split validation --weights <output>``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from bundle.checkpoints import read_state_dict, save_weights
from bundle.weight_average import average_state_dicts

logger = logging.getLogger("average_weights")


def combine_main(argv: list[str] | None, description: str, combine: Callable[..., dict], noun: str,
                 weights_help: str) -> int:
    """The command line shared by the scripts that combine weights files into one: ``--weights`` (two or more,
    read only, none twice) and ``--output`` (not one of them), ``combine(states, names=...)`` -> the state dict
    written atomically. Returns the exit status (1 when ``combine`` refuses the files, naming them)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, nargs="+", required=True, help=weights_help)
    parser.add_argument("--output", type=Path, required=True, help=f"the {noun} weights file to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    inputs = {path.resolve() for path in args.weights}
    if args.output.resolve() in inputs:
        parser.error(f"--output {args.output} is one of the input weights files; write the {noun} elsewhere.")
    if len(inputs) != len(args.weights):
        parser.error(f"a weights file is named twice; each input counts once in the {noun}.")
    try:
        states = [read_state_dict(path) for path in args.weights]
        combined = combine(states, names=[str(path) for path in args.weights])
    except (ValueError, FileNotFoundError) as err:
        logger.error("%s", err)
        return 1
    save_weights(combined, args.output)
    logger.info("wrote %s: the %s of %s", args.output, noun, ", ".join(str(p) for p in args.weights))
    return 0


def main(argv: list[str] | None = None) -> int:
    return combine_main(argv, __doc__, average_state_dicts, "average",
                        "two or more weights files of the same network (read only)")


if __name__ == "__main__":
    sys.exit(main())
