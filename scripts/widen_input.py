r"""Turn one-slice weights, or 2.5D weights of fewer neighbours, into the starting point of a wider 2.5D network
(``context_slices`` > 0) that computes the same function (``bundle.warm_start.widen_to_context``: the input layers'
weights on the slices they read, centred, zeros on the added neighbours), for ``init_weights`` of a 2.5D training run.

    python -m scripts.widen_input --weights outputs/train/checkpoints/model.pt --context-slices 1 \
        --output outputs/warm/model.pt
    python -m monai.bundle run --config_file configs/train.json --context_slices 1 \
        --init_weights outputs/warm/model.pt ...

The target network is one network of the training config's ``network_def`` (plus the task overlay) with
``context_slices`` set; the input weights file is never modified.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bundle.checkpoints import read_state_dict, save_weights
from bundle.config import bundle_parser, parsed
from bundle.evaluation import BUNDLE_ROOT
from bundle.networks import one_member
from bundle.tasks import TASKS
from bundle.warm_start import widen_to_context

logger = logging.getLogger("widen_input")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=sorted(TASKS), default="lgg")
    parser.add_argument("--weights", type=Path, required=True, help="weights of fewer input slices (read only)")
    parser.add_argument("--context-slices", type=int, default=1, help="neighbours on each side (>= 1)")
    parser.add_argument("--output", type=Path, required=True, help="the weights file to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.output.resolve() == args.weights.resolve():
        parser.error(f"--output {args.output} is the input weights file; write the result elsewhere.")
    try:
        config = bundle_parser(BUNDLE_ROOT, args.task, "train", {"context_slices": args.context_slices})
        target = one_member(parsed(config, "network_def")).state_dict()  # the network one training run trains
        widened = widen_to_context(read_state_dict(args.weights), target, args.context_slices)
    except (ValueError, FileNotFoundError) as err:
        logger.error("%s", err)
        return 1
    save_weights(widened, args.output)
    logger.info("wrote %s: %s widened to %d input channels", args.output, args.weights, 2 * args.context_slices + 1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
