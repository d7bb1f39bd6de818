"""Check the bundle on a GPU: a short AMP training run, inference through configs/inference.json, DDP with one
process, and a latency table (LM-Net deployed vs MONAI's U-Nets, fp32 and fp16 autocast, batch 1 and 8).

    python -m scripts.gpu_check [--output outputs/gpu_check]

Without CUDA it does nothing and says why (exit 0). `--device cpu` runs the same steps on the CPU at a small size
(what the tests do). The report goes to `<output>/gpu_check.md` and to stdout; the exit status is 1 if a step failed.
"""

from __future__ import annotations

import argparse
import logging
import platform
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=Path("outputs") / "gpu_check")
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--latency-size", type=int, default=256, help="in-plane size of the latency table (pixels)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    log = logging.getLogger("gpu_check")

    from bundle.gpu_check import cuda_missing, report, run_gpu_check

    if args.device == "cuda" and (why := cuda_missing()) is not None:
        log.warning("GPU check skipped: %s. Run it on a machine with a CUDA GPU (or --device cpu to try the steps "
                    "here).", why)
        return 0
    import torch

    results, rows = run_gpu_check(args.output, args.device, epochs=args.epochs, latency_size=args.latency_size,
                                  batches=(1, 8) if args.device == "cuda" else (1,))
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "CPU"
    text = report(results, rows, name)
    (args.output / "gpu_check.md").write_text(text + "\n")
    print(text)
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
