r"""Write one member of an ensemble weights file (``scripts/build_ensemble.py``) as the weights file of one network,
e.g. to fine-tune from the shipped LGG ensemble (``--init_weights`` takes one network's weights):

    python -m scripts.extract_member --weights models/model.pt --member 0 --output outputs/member0.pt

The input is read (digest-checked where it is a shipped file) and never modified; the output is written atomically
and may not be the input.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from bundle.networks.ensemble import write_member

logger = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, required=True, help="an ensemble weights file (read only)")
    parser.add_argument("--member", type=int, default=0, help="the member to write, from 0 (default 0)")
    parser.add_argument("--output", type=Path, required=True, help="the weights file of one network to write")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.output.resolve() == args.weights.resolve():
        parser.error(f"--output {args.output} is the input; write the member elsewhere.")
    try:
        write_member(args.weights, args.member, args.output)
    except (ValueError, FileNotFoundError) as err:
        logger.error("%s", err)
        return 1
    logger.info("wrote %s: member %d of %s", args.output, args.member, args.weights)
    return 0


if __name__ == "__main__":
    sys.exit(main())
