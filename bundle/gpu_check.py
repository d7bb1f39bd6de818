"""The check to run on the day a GPU is present (``scripts/gpu_check.py``).

Four steps, each through the bundle's own configs as a user runs them, on a small synthetic LGG-layout dataset:

1. ``train_amp``: ``configs/train.json`` for a few epochs with automatic mixed precision (``amp`` true on CUDA);
2. ``inference``: ``configs/inference.json`` on the training volumes with that checkpoint;
3. ``ddp``: ``configs/train.json`` + ``configs/multi_gpu_train.json`` under ``torch.distributed.run`` with one
   process (NCCL on CUDA, gloo on the CPU);
4. ``latency``: median forward ms of LM-Net (deployed form) and MONAI's reference networks, fp32 and, on CUDA,
   fp16 autocast, at batch 1 and 8.

On the CPU (``device="cpu"``) the same steps run without AMP at a small size, which is how the tests exercise this
module; :func:`cuda_missing` says why a CUDA run cannot happen on this machine.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .benchmark import measure_latency, reference_models
from .data.datalist import build_datalist, write_datalist
from .data.synthetic import write_synthetic_lgg
from .demo import BUNDLE_ROOT, bundle_run

__all__ = ["CheckResult", "cuda_missing", "free_tcp_port", "run_gpu_check", "latency_rows", "report"]

logger = logging.getLogger(__name__)


@dataclass
class CheckResult:
    """One step: its name, whether it passed, its wall seconds and what it found (or the error)."""

    name: str
    ok: bool
    seconds: float
    detail: str


def cuda_missing() -> str | None:
    """Why CUDA cannot be used here (``None`` when it can)."""
    if not torch.cuda.is_available():
        build = torch.version.cuda
        return (f"no CUDA device visible to PyTorch {torch.__version__} "
                f"({'a CPU-only build' if build is None else f'built for CUDA {build}'})")
    return None


def free_tcp_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now (the rendezvous port of a one-machine DDP run)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _step(name: str, results: list[CheckResult], func) -> None:
    start = time.perf_counter()
    try:
        detail = func()
        results.append(CheckResult(name, True, time.perf_counter() - start, detail))
    except Exception as err:  # noqa: BLE001 - a failed step is reported and the next one still runs
        logger.exception("gpu check step %s failed", name)
        results.append(CheckResult(name, False, time.perf_counter() - start, f"{type(err).__name__}: {err}"))
    logger.info("%s: %s (%.1f s) %s", name, "ok" if results[-1].ok else "FAILED", results[-1].seconds,
                results[-1].detail)


def latency_rows(device: torch.device, size: int, batches: tuple[int, ...], repeats: int = 20) -> list[dict]:
    """Median forward ms of LM-Net deployed and the reference networks on ``device``: one row per network, batch and
    precision (fp32; on CUDA also fp16 autocast)."""
    from .networks import LMNet, reparameterize_model

    builders = {"LM-Net (deployed)": lambda: reparameterize_model(LMNet(spatial_dims=2, in_channels=1, out_channels=2)),
                **reference_models()}
    precisions = ["fp32", "fp16 autocast"] if device.type == "cuda" else ["fp32"]
    rows = []
    for label, build in builders.items():
        network = build().to(device).eval()
        for precision in precisions:
            for batch in batches:
                autocast = (torch.autocast("cuda", dtype=torch.float16) if precision != "fp32"
                            else contextlib.nullcontext())
                with autocast:
                    ms = measure_latency(network, (batch, 1, size, size), repeats=repeats)
                rows.append({"network": label, "precision": precision, "batch": batch, "ms": ms,
                             "images_per_s": batch * 1e3 / ms})
        del network
    return rows


def run_gpu_check(output_dir: str | os.PathLike, device: str = "cuda", epochs: int = 2, size: int = 64,
                  latency_size: int = 256, batches: tuple[int, ...] = (1, 8)) -> tuple[list[CheckResult], list[dict]]:
    """Run the four steps on ``device`` ("cuda" or "cpu") below ``output_dir``; returns the steps' results and the
    latency rows. A failed step does not stop the others (the inference step needs the training step's checkpoint).

    Raises:
        RuntimeError: ``device`` is "cuda" and CUDA is missing (the message says why).
    """
    if device == "cuda" and (why := cuda_missing()) is not None:
        raise RuntimeError(f"the GPU check needs CUDA: {why}.")
    out = Path(output_dir).resolve()
    data = write_synthetic_lgg(out / "data", n_cases=6, shape=(size, size, 12))
    datalist = write_datalist(build_datalist(data, fractions=(0.5, 0.34, 0.16)), out / "datalist.json")
    amp = device == "cuda"
    common = {"dataset_dir": data, "datalist": datalist, "roi_size": f"[{size},{size}]", "num_workers": 0}
    checkpoint = out / "train" / "checkpoints" / "model.pt"
    results: list[CheckResult] = []

    def train() -> str:
        bundle_run("lgg", "train", {**common, "output_dir": out / "train", "max_epochs": epochs, "val_interval": 1,
                                    "batch_size": 2, "num_samples": 4, "amp": amp, "resume": False},
                   out / "logs" / "train.log")
        if not checkpoint.is_file():
            raise RuntimeError(f"training wrote no {checkpoint}")
        return f"{epochs} epochs, amp={amp}, checkpoint {checkpoint.name}"

    def infer() -> str:
        bundle_run("lgg", "inference", {"dataset_dir": data, "output_dir": out / "infer", "ckpt_path": checkpoint,
                                        "roi_size": common["roi_size"], "num_workers": 0, "amp": amp},
                   out / "logs" / "inference.log")
        written = sorted((out / "infer").rglob("*.nii.gz"))
        images = sorted(data.glob("*_image.nii.gz"))
        if len(written) != len(images):
            raise RuntimeError(f"{len(written)} segmentations written for {len(images)} volumes")
        return f"{len(written)} volumes segmented"

    def ddp() -> str:
        # the train command bundle_run would run, started by torch.distributed.run with the multi-GPU overlay
        overrides = {**common, "output_dir": out / "ddp", "max_epochs": 1, "val_interval": 1, "batch_size": 2,
                     "num_samples": 4, "amp": amp, "resume": False}
        torchrun = ["-m", "torch.distributed.run", "--nproc_per_node", "1", "--master_addr", "127.0.0.1",
                    "--master_port", str(free_tcp_port())]
        bundle_run("lgg", "train", overrides, out / "logs" / "ddp.log",
                   [str(BUNDLE_ROOT / "configs" / "multi_gpu_train.json")], launcher=torchrun)
        if not (out / "ddp" / "checkpoints" / "model_final.pt").is_file():
            raise RuntimeError(f"the DDP run wrote no {out / 'ddp' / 'checkpoints' / 'model_final.pt'}")
        return "1 process, " + ("nccl" if device == "cuda" else "gloo")

    rows: list[dict] = []

    def latency() -> str:
        rows.extend(latency_rows(torch.device(device), latency_size, batches, repeats=20 if device == "cuda" else 3))
        return f"{len(rows)} rows"

    for name, func in (("train_amp", train), ("inference", infer), ("ddp", ddp), ("latency", latency)):
        _step(name, results, func)
    return results, rows


def report(results: list[CheckResult], rows: list[dict], device_name: str) -> str:
    """The check as markdown: the steps, then the latency table."""
    lines = [f"GPU check on {device_name} (PyTorch {torch.__version__})", "", "| step | result | s | detail |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {r.name} | {'ok' if r.ok else 'FAILED'} | {r.seconds:.1f} | {r.detail} |" for r in results]
    if rows:
        lines += ["", "| network | precision | batch | ms | images/s |", "| --- | --- | --- | --- | --- |"]
        lines += [f"| {r['network']} | {r['precision']} | {r['batch']} | {r['ms']:.2f} | {r['images_per_s']:.1f} |"
                  for r in rows]
    return "\n".join(lines)
