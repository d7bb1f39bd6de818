r"""Store two or more weights files of one network as one ensemble weights file: the inference config then runs
every member and averages their class probabilities (``bundle.networks.ensemble``).

    python -m scripts.build_ensemble --weights run_0/model.pt run_a/model.pt run_b/model.pt \
        --output outputs/ensemble/model.pt

The inputs are read (digest-checked where they are shipped files) and never modified; the output is written
atomically and may not be one of them. Score it like any weights file: ``python -m scripts.reproduce_results --split
validation --weights <output>``.
"""

from __future__ import annotations

import sys

from bundle.networks.ensemble import ensemble_state_dict
from scripts.average_weights import combine_main


def main(argv: list[str] | None = None) -> int:
    return combine_main(argv, __doc__, ensemble_state_dict, "ensemble",
                        "two or more weights files of the same network, in member order (read only)")


if __name__ == "__main__":
    sys.exit(main())
