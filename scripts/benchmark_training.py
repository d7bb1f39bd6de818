"""Time one training step of LM-Net as `configs/train.json` runs it, beside MONAI's UNet and BasicUNet, and beside
LM-Net at an earlier git revision; prints a markdown table.

    python -m scripts.benchmark_training                          # 128 x 128, batch 16, 2 threads
    python -m scripts.benchmark_training --baseline-rev 4bd8c12   # adds LM-Net as that commit trains it
    python -m scripts.benchmark_training --compile                # adds LM-Net under torch.compile (minutes to compile)
    python -m scripts.benchmark_training --bf16                   # adds each network with `precision bf16`

A step is one iteration of the config's trainer (`bundle.training_benchmark`): the batch as the data loader gives
it, forward, loss, backward, AdamW, and the per-iteration handlers. Every measurement runs in a fresh process, in
`--rounds` rounds that alternate the networks (so slow drift of a shared machine hits all of them); the table shows
the median over all timed steps. Timings on a busy machine are noisy: compare the ratios of one run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bundle.benchmark import REFERENCE_NETWORKS, count_parameters, network_from_def, revision_checkout

logger = logging.getLogger("benchmark_training")

ROOT = Path(__file__).resolve().parents[1]
STEP_SCRIPT = ROOT / "bundle" / "training_benchmark.py"
PEERS = ("unet", "basicunet")
# the trainer runs the training config's own network under torch.compile (the optimizer and the weight average keep
# the plain module: the same parameters); its compile runs in the untimed steps
COMPILED_TRAINER_NETWORK = {"train#trainer#network": "$torch.compile(@network)"}
# the training config's CPU bfloat16 autocast of the forward (`precision`): a different function, a faster step
BF16 = {"precision": "bf16"}


def _run_step(bundle_root: Path, network_def: dict | None, args: argparse.Namespace,
              overrides: dict | None = None) -> list[float]:
    """Step times (ms) from a fresh process timing ``bundle_root``'s training config (with ``overrides``)."""
    kwargs = {"bundle_root": str(bundle_root), "network_def": network_def, "batch": args.batch, "size": args.size,
              "repeats": args.repeats, "warmup": 2, "threads": args.threads, "overrides": overrides}
    # run_path: the script's folder (bundle/) must not land on sys.path, where its modules would shadow others
    code = f"import runpy, sys; sys.argv = ['step', {json.dumps(kwargs)!r}]; runpy.run_path({str(STEP_SCRIPT)!r}, " \
           "run_name='__main__')"
    result = subprocess.run([sys.executable, "-c", code], cwd=tempfile.gettempdir(), capture_output=True, text=True,
                            check=False)
    if result.returncode != 0:
        raise RuntimeError(f"timing {network_def or 'LM-Net'} at {bundle_root} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])["ms"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="square slice side (default 128)")
    parser.add_argument("--batch", type=int, default=16, help="slices per step (default 16)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per process (after 2 untimed)")
    parser.add_argument("--rounds", type=int, default=2, help="fresh processes per network, alternating")
    parser.add_argument("--baseline-rev", help="also time LM-Net as this git revision trains it")
    parser.add_argument("--lmnet-only", action="store_true", help="skip MONAI's networks")
    parser.add_argument("--compile", action="store_true", help="also time LM-Net's step under torch.compile")
    parser.add_argument("--bf16", action="store_true",
                        help="also time each network (working tree) with the config's precision bf16")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    # (label, code, bundle root, network_def or None for LM-Net, config overrides)
    rows: list[tuple[str, str, Path, dict | None, dict | None]] = [("LM-Net", "working tree", ROOT, None, None)]
    with contextlib.ExitStack() as stack:
        if args.compile:
            rows.append(("LM-Net + torch.compile", "working tree", ROOT, None, COMPILED_TRAINER_NETWORK))
        if args.baseline_rev:
            tree = stack.enter_context(revision_checkout(ROOT, args.baseline_rev))
            rows.append(("LM-Net", args.baseline_rev, tree, None, None))
        if args.bf16:
            rows.append(("LM-Net, precision bf16", "working tree", ROOT, None, BF16))
        if not args.lmnet_only:
            for key in PEERS:
                label, config = REFERENCE_NETWORKS[key]
                net = {**config, "spatial_dims": 2, "in_channels": 1, "out_channels": 2}
                rows.append((label, "working tree", ROOT, net, None))
                if args.bf16:
                    rows.append((f"{label}, precision bf16", "working tree", ROOT, net, BF16))
        times: dict[int, list[float]] = {i: [] for i in range(len(rows))}
        for r in range(args.rounds):
            for i, (label, rev, root, net, overrides) in enumerate(rows):
                times[i] += _run_step(root, net, args, overrides)
                logger.info("round %d, %s (%s): %.0f ms/step", r + 1, label, rev, statistics.median(times[i]))

    from bundle.networks import LMNet

    reference = statistics.median(times[0])
    lines = [f"Training step, {args.size} x {args.size}, batch {args.batch}, CPU, {args.threads} threads; median of "
             f"{args.rounds} x {args.repeats} steps",
             "| network | code | params (M) | ms/step | ms/image | images/s | step time / LM-Net's (working tree) |",
             "|" + " --- |" * 7]
    for i, (label, rev, _, net, _) in enumerate(rows):
        params = count_parameters(network_from_def(net) if net else LMNet()) / 1e6
        ms = statistics.median(times[i])
        lines.append(f"| {label} | {rev} | {params:.2f} | {ms:.0f} | {ms / args.batch:.1f} | "
                     f"{1e3 * args.batch / ms:.1f} | {ms / reference:.2f} |")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
