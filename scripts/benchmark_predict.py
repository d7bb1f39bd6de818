"""Compare the batch predictor's end-to-end rate with the network-only rate on generated LGG-sized volumes.

Writes N synthetic volumes in the kaggle_3m layout (uint8 NIfTI, H x W x D x 3, FLAIR = channel 1) to a temporary
folder, then measures
- network-only: the segmenter on each volume already in memory (reading is not timed);
- end to end: ``Predictor.predict_folder`` (discovery, reading, network, NIfTI + PNG writing, manifest);
and prints slices/s of both, their ratio, and the process's peak resident memory after each (the network's
activations dominate it; the predictor's queues are bounded, so it does not grow with the number of cases). On a
shared machine, other load moves both rates: compare them from the same run.

Usage (from the repository root):
    python -m scripts.benchmark_predict                          # 20 volumes of 256 x 256 x 40, random weights
    python -m scripts.benchmark_predict --cases 4 --slices 10    # a quick look
"""

from __future__ import annotations

import argparse
import logging
import platform
import resource
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from bundle.data.synthetic import make_synthetic_volume
from bundle.io import discover_cases, load_case
from bundle.predictor import Predictor
from bundle.segmenter import Segmenter


def _write_volumes(folder: Path, cases: int, size: int, slices: int) -> None:
    for i in range(cases):
        image, _ = make_synthetic_volume((size, size, slices), seed=i)
        nib.save(nib.Nifti1Image(image, np.eye(4)), folder / f"SYN_{i:03d}_image.nii.gz")


def _network_only(segmenter: Segmenter, folder: Path, channel_index: int) -> tuple[int, float]:
    slices, seconds = 0, 0.0
    for case in discover_cases(folder):
        image = load_case(case, channel_index).image
        start = time.perf_counter()
        segmenter(image)
        seconds += time.perf_counter() - start
        slices += image.shape[-1]
    return slices, seconds


def _peak_rss_mib() -> float:
    """Peak resident memory of this process so far (ru_maxrss is in KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _measure(segmenter: Segmenter, args: argparse.Namespace, channel_index: int) -> dict:
    """Alternate network-only and end-to-end rounds on the same generated folder; keep each one's best time."""
    result = {"net": float("inf"), "e2e": float("inf"), "failed": []}
    with tempfile.TemporaryDirectory(prefix="lmnet_bench_") as tmp:
        folder = Path(tmp, "in")
        folder.mkdir()
        _write_volumes(folder, args.cases, args.size, args.slices)
        segmenter(np.random.default_rng(0).random((args.size, args.size, min(args.slices, 4)), np.float32))  # warm-up
        predictor = Predictor(segmenter, formats=("nifti", "png"), channel_index=channel_index,
                              num_readers=args.num_readers, quiet=True)
        for repeat in range(args.repeats):
            result["slices"], seconds = _network_only(segmenter, folder, channel_index)
            result["net"], result["net_peak"] = min(result["net"], seconds), _peak_rss_mib()
            start = time.perf_counter()
            records = predictor.predict_folder(folder, Path(tmp, f"out{repeat}"))
            result["e2e"], result["e2e_peak"] = min(result["e2e"], time.perf_counter() - start), _peak_rss_mib()
            result["failed"] += [r.error for r in records if r.status != "done"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=20, help="number of volumes (default 20)")
    parser.add_argument("--size", type=int, default=256, help="in-plane size (default 256)")
    parser.add_argument("--slices", type=int, default=40, help="slices per volume (default 40)")
    parser.add_argument("--weights", default=None, help="weights file (default: random initialisation)")
    parser.add_argument("--device", default="auto", help="auto (default), cpu, cuda, ...")
    parser.add_argument("--batch-size", type=int, default=16, help="slices per forward pass (default 16)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--num-readers", type=int, default=2, help="predictor reader threads (default 2)")
    parser.add_argument("--repeats", type=int, default=1, help="alternating rounds; best time of each (default 1)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    # the LGG inference config's pipeline; random weights unless --weights
    overrides = {"sw_batch_size": args.batch_size, **({} if args.weights else {"ckpt_path": None})}
    predictor = Predictor.from_bundle(".", "lgg", args.device, args.weights, overrides)
    segmenter = predictor.segmenter
    r = _measure(segmenter, args, predictor.channel_index)
    net_rate, e2e_rate = r["slices"] / r["net"], r["slices"] / r["e2e"]
    print(f"# {args.cases} volumes of {args.size} x {args.size} x {args.slices} (uint8 NIfTI, 3 channels), "
          f"LM-Net ({'weights ' + args.weights if args.weights else 'random weights'}), device {segmenter.device}, "
          f"batch {args.batch_size}, {torch.get_num_threads()} torch threads, {platform.machine()}, "
          f"best of {args.repeats} round(s)")
    print(_row(["measure", "seconds", "slices/s", "ratio to network-only", "peak RSS so far (MiB)"]))
    print(_row(["---"] * 5))
    print(_row(["network only (in memory)", f"{r['net']:.1f}", f"{net_rate:.1f}", "1.00", f"{r['net_peak']:.0f}"]))
    print(_row(["end to end (predict_folder)", f"{r['e2e']:.1f}", f"{e2e_rate:.1f}", f"{e2e_rate / net_rate:.2f}",
                f"{r['e2e_peak']:.0f}"]))
    if r["failed"]:
        print(f"# {len(r['failed'])} case(s) failed: {r['failed'][:3]}")
    return 1 if r["failed"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
