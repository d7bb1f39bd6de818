"""The main job on an embedded default: generate a small synthetic dataset, then train -> evaluate -> infer with
this bundle's own configs through ``python -m monai.bundle run``, exactly as a user would on real data."""

from __future__ import annotations

import logging
import os
import shlex
import shutil
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

from .config import bundle_run_command
from .data.synthetic import write_synthetic_busi, write_synthetic_lgg

__all__ = ["DemoSettings", "run_demo", "bundle_run"]

logger = logging.getLogger(__name__)
BUNDLE_ROOT = Path(__file__).resolve().parents[1]


def bundle_run(task: str, kind: str, overrides: dict[str, object], log_file: Path,
               extra_configs: Sequence[str] = (), launcher: Sequence[str] = ()) -> None:
    """Run ``python -m monai.bundle run`` (:func:`bundle.config.bundle_run_command`: the task's ``kind`` configs, then
    ``extra_configs``, then ``--key value`` overrides) from the bundle root; output goes to ``log_file``. Raises
    ``RuntimeError`` with the log's tail on failure. ``launcher``: arguments between the interpreter and ``-m
    monai.bundle`` (e.g. ``["-m", "torch.distributed.run", "--nproc_per_node", "2"]``)."""
    cmd = bundle_run_command(BUNDLE_ROOT, task, kind, {k: str(v) for k, v in overrides.items()}, extra_configs)
    cmd = [cmd[0], *launcher, *cmd[1:]]
    logger.info("$ %s", shlex.join(["python", *cmd[1:]]))  # copy-pastable into a shell
    env = {**os.environ, "PYTHONPATH": str(BUNDLE_ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as log:
        result = subprocess.run(cmd, cwd=BUNDLE_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        tail = "\n".join(log_file.read_text().splitlines()[-30:])
        raise RuntimeError(f"monai.bundle run failed (exit {result.returncode}); log {log_file}:\n{tail}")


class DemoSettings:
    """Sizes of the demo: small enough to finish in a few minutes on 2 CPU cores.

    Args:
        output_dir: everything goes below it (data/, train/, eval/, infer/, logs/).
        n_volumes: synthetic LGG-layout volumes (64 x 64 x 12 x 3).
        epochs: training epochs.
        roi_size: in-plane size the network sees (pixels).
    """

    def __init__(self, output_dir: str | os.PathLike, n_volumes: int = 10, epochs: int = 30, roi_size: int = 64):
        self.output_dir = Path(output_dir).resolve()
        self.n_volumes = n_volumes
        self.epochs = epochs
        self.roi_size = roi_size


def _prepare_data(s: DemoSettings) -> tuple[Path, Path]:
    data = s.output_dir / "data"
    if data.exists():
        shutil.rmtree(data)
    lgg = write_synthetic_lgg(data / "lgg", n_cases=s.n_volumes, shape=(64, 64, 12))
    busi = write_synthetic_busi(data / "busi", n_lesion=2, n_normal=0, shape=(80, 96), seed=7)
    inputs = data / "infer_inputs"
    inputs.mkdir()
    shutil.copy(lgg / "SYN_000_image.nii.gz", inputs / "volume_flair.nii.gz")
    shutil.copy(busi / "benign" / "benign_1.png", inputs / "image.png")
    return lgg, inputs


def run_demo(settings: DemoSettings) -> dict[str, Path]:
    """Run the whole pipeline; returns the paths of its results (checkpoint, metrics table, predictions)."""
    s = settings
    start = time.perf_counter()
    lgg, inputs = _prepare_data(s)
    roi = f"[{s.roi_size},{s.roi_size}]"
    common = {"dataset_dir": lgg, "datalist": s.output_dir / "datalist.json", "roi_size": roi, "num_workers": 0}
    train_dir, eval_dir, infer_dir = s.output_dir / "train", s.output_dir / "eval", s.output_dir / "infer"
    for folder in (train_dir, eval_dir, infer_dir):
        shutil.rmtree(folder, ignore_errors=True)
    logs = s.output_dir / "logs"
    bundle_run("lgg", "train", {**common, "output_dir": train_dir, "max_epochs": s.epochs,
               "val_interval": min(5, s.epochs), "batch_size": 4, "num_samples": 4}, logs / "train.log")
    checkpoint = train_dir / "checkpoints" / "model.pt"
    bundle_run("lgg", "train", {**common, "output_dir": eval_dir, "ckpt_path": checkpoint}, logs / "evaluate.log",
               [str(BUNDLE_ROOT / "configs" / "evaluate.json")])
    bundle_run("lgg", "inference", {"dataset_dir": inputs, "output_dir": infer_dir, "ckpt_path": checkpoint,
               "roi_size": common["roi_size"], "num_workers": 0}, logs / "inference.log")
    logger.info("demo finished in %.0f s", time.perf_counter() - start)
    return {"checkpoint": checkpoint, "metrics": eval_dir / "summary.md", "per_case": eval_dir / "metrics.csv",
            "predictions": infer_dir, "logs": logs}
