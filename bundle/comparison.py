"""Training LM-Net and MONAI's networks alike through the bundle's configs and scoring them on one split
(``scripts/compare.py``).

Each network is a ``network_def`` overlay on the task's configs; its training runs ``monai.bundle run`` with the
recipe the configs hold (the shipped weights' recipe) for a wall-clock budget: a one-epoch probe times an epoch, and
the cosine schedule is set to the epochs that fit.
"""

from __future__ import annotations

import json
import logging
import math
import re
import statistics
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .benchmark import REFERENCE_NETWORKS, count_macs, count_parameters, measure_latency
from .config import bundle_parser, bundle_run_command
from .evaluation import BUNDLE_ROOT, evaluate, run_inference
from .reports import write_report

__all__ = ["NetworkSpec", "NETWORKS", "ComparisonRun", "epoch_seconds", "run_seconds", "table"]

logger = logging.getLogger(__name__)

VALIDATIONS = 10  # validations a run gets, whatever its number of epochs
_EPOCH_TIME = re.compile(r"Epoch\[\d+\] Complete\. Time taken: (\d+):(\d+):([\d.]+)")
_RUN_TIME = re.compile(r"Engine run finished\. Time taken: (\d+):(\d+):([\d.]+)")
_CHANNELS = {"spatial_dims": 2, "in_channels": "$1 + 2 * @context_slices", "out_channels": 2}


@dataclass(frozen=True)
class NetworkSpec:
    """A compared network: its label, ``network_def`` (without dimensions and channels), settings that differ from
    the configs' recipe for training and for inference, a budget of its own, and whether validation picks the
    checkpoint (else the final weights are scored)."""

    label: str
    network_def: dict
    train_settings: dict = field(default_factory=dict)
    inference_settings: dict = field(default_factory=dict)
    minutes: float | None = None
    validate: bool = True


NETWORKS: dict[str, NetworkSpec] = {
    "lmnet": NetworkSpec("LM-Net (this bundle)",
                         {"_target_": "bundle.networks.lmnet_ensemble", "members": "@ensemble_members"}),
    **{key: NetworkSpec(label, config) for key, (label, config) in REFERENCE_NETWORKS.items()},
    "unet_plain": NetworkSpec(
        "MONAI UNet (16..256), plain 15-minute recipe",
        {"_target_": "monai.networks.nets.UNet", "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2],
         "num_res_units": 2},
        train_settings={"roi_size": [128, 128], "context_slices": 0, "learning_rate": 0.001, "lesion_weight": 1.0,
                        "batch_size": 2, "num_samples": 8, "crop_pos": 1, "crop_neg": 1,
                        "crop_neg_min_intensity": -1.0, "train#random_transforms": "$@train#flip_transforms",
                        "keep_largest_component": False, "min_lesion_size": 0, "lesion_threshold": 0.5,
                        "tta_flips": []},
        inference_settings={"roi_size": [128, 128], "context_slices": 0, "keep_largest_component": False,
                            "min_lesion_size": 0, "lesion_threshold": 0.5, "tta_flips": []},
        minutes=15.0,
        validate=False,
    ),
}


def _trainer_times(log_text: str, pattern: re.Pattern) -> list[float]:
    """Seconds of every "Time taken: h:m:s" match of ``pattern`` on the trainer's log lines (the evaluator's lines,
    which look alike, are skipped)."""
    lines = "\n".join(line for line in log_text.splitlines() if "SupervisedTrainer" in line)
    return [int(h) * 3600 + int(m) * 60 + float(s) for h, m, s in pattern.findall(lines)]


def epoch_seconds(log_text: str) -> list[float]:
    """Wall seconds of each training epoch, from the trainer's "Epoch[n] Complete. Time taken: h:m:s" log lines."""
    return _trainer_times(log_text, _EPOCH_TIME)


def run_seconds(log_text: str) -> float:
    """Wall seconds the trainer ran, from its "Engine run finished. Time taken: h:m:s" lines (summed over the
    processes of a resumed run; validation included, data caching and process start not); NaN without one."""
    times = _trainer_times(log_text, _RUN_TIME)
    return sum(times) if times else math.nan


class ComparisonRun:
    """One network of a comparison: train it (or adopt a finished run), measure its cost, score it.

    Args:
        name: a key of :data:`NETWORKS`.
        task: the bundle task.
        dataset_dir: the task's data folder.
        split_file: the split file (training / validation / test).
        out: this network's output folder.
        settings: settings of the configs for every network that follows the configs' recipe (``--bundle-arg``):
            they apply to its training and to its inference (a setting one config lacks is unused there).
        seed: the training run's random seed (every network, its own recipe or not); None keeps the configs' (0).
    """

    def __init__(self, name: str, task: str, dataset_dir: Path, split_file: Path, out: Path,
                 settings: dict | None = None, seed: int | None = None) -> None:
        self.name, self.spec, self.task = name, NETWORKS[name], task
        self.dataset_dir, self.split_file, self.out = dataset_dir, split_file, out
        self.out.mkdir(parents=True, exist_ok=True)
        self.overlay = out / "network.json"
        self.overlay.write_text(json.dumps({"network_def": {**self.spec.network_def, **_CHANNELS}}, indent=4) + "\n")
        own_recipe = self.spec.minutes is not None  # a recipe of its own: the shared settings do not apply
        from fire.parser import DefaultParseValue  # values as typed are read as monai.bundle run reads them

        shared = {} if own_recipe else {k: DefaultParseValue(v) if isinstance(v, str) else v
                                        for k, v in (settings or {}).items()}
        self.settings = {**shared, **self.spec.train_settings, **({"seed": int(seed)} if seed is not None else {})}
        self.inference_settings = {**shared, **self.spec.inference_settings}
        self.checkpoint: Path | None = None

    def training_command(self, run_dir: Path, epochs: int, val_interval: int, seconds: float) -> list[str]:
        """The ``monai.bundle run`` command that trains this network (a pure function of its arguments)."""
        overrides = {"dataset_dir": str(self.dataset_dir), "datalist": str(self.split_file),
                     "output_dir": str(run_dir), "max_epochs": epochs, "val_interval": val_interval,
                     "time_budget_s": round(seconds), "resume": "false", **self.settings}
        return bundle_run_command(BUNDLE_ROOT, self.task, "train", overrides, [str(self.overlay)])

    def _run(self, cmd: list[str], log_path: Path) -> str:
        logger.info("training %s: %s (log: %s)", self.name, " ".join(cmd), log_path)
        with open(log_path, "w") as log:
            result = subprocess.run(cmd, cwd=BUNDLE_ROOT, stdout=log, stderr=subprocess.STDOUT)
        text = log_path.read_text()
        if result.returncode != 0:
            raise RuntimeError(f"training {self.name} failed (exit {result.returncode}); see {log_path}:\n"
                               f"{text[-3000:]}")
        return text

    def train(self, budget_minutes: float) -> dict:
        """Probe one epoch, then train for the epochs that fit the budget. Returns the run's facts."""
        minutes = self.spec.minutes or budget_minutes
        probe = self._run(self.training_command(self.out / "probe", 1, 2, 0), self.out / "probe.log")
        probe_s = epoch_seconds(probe)[0]
        epochs = max(1, int(minutes * 60 * (0.9 if self.spec.validate else 1.0) // probe_s))
        val_interval = max(1, epochs // VALIDATIONS) if self.spec.validate else epochs + 1
        start = time.perf_counter()
        text = self._run(self.training_command(self.out / "train", epochs, val_interval, minutes * 60),
                         self.out / "train.log")
        facts = self._facts(self.out / "train", text, time.perf_counter() - start)
        (self.out / "train" / "wall_s.txt").write_text(f"{facts['wall_s']:.1f}\n")
        return facts

    def adopt(self, run_dir: Path | list[Path]) -> dict:
        """Use a finished training run of this network (its log beside it: ``<run_dir>.log`` or ``train.log``;
        its wall time from the ``wall_s.txt`` that :meth:`train` writes, else the trainer's own run time in the
        log), or several: the mean-probability ensemble of their checkpoints (written to ``<out>/ensemble.pt``),
        with the runs' epochs and wall times summed (NaN where a run's log is missing) and the median of the runs'
        median epoch times."""
        runs = [run_dir] if isinstance(run_dir, Path) else list(run_dir)
        facts = [self._adopt_one(one) for one in runs]
        if len(facts) == 1:
            return facts[0]
        from .checkpoints import read_state_dict, save_weights
        from .networks.ensemble import ensemble_state_dict

        if "members" not in self.spec.network_def:  # a definition of one network: its ensemble of copies
            network = {**self.spec.network_def, **_CHANNELS}
            wrapped = {"_target_": "bundle.networks.ensemble_of", "network": network, "members": "@ensemble_members"}
            self.overlay.write_text(json.dumps({"network_def": wrapped}, indent=4) + "\n")
        checkpoints = [f["checkpoint"] for f in facts]
        state = ensemble_state_dict([read_state_dict(c) for c in checkpoints], checkpoints)
        self.checkpoint = save_weights(state, self.out / "ensemble.pt")
        known = [f["s_per_epoch"] for f in facts if not math.isnan(f["s_per_epoch"])]
        return {"checkpoint": str(self.checkpoint), "members": checkpoints,
                "epochs": sum(f["epochs"] for f in facts) if all(f["epochs"] for f in facts) else math.nan,
                "wall_s": sum(f["wall_s"] for f in facts),
                "s_per_epoch": statistics.median(known) if known else math.nan}

    def _adopt_one(self, run_dir: Path) -> dict:
        logs = [p for p in (run_dir.with_suffix(".log"), run_dir / "train.log") if p.is_file()]
        text = logs[0].read_text() if logs else ""
        wall = run_dir / "wall_s.txt"
        return self._facts(run_dir, text, float(wall.read_text()) if wall.is_file() else run_seconds(text))

    def _facts(self, run_dir: Path, log_text: str, wall: float) -> dict:
        name = "model.pt" if self.spec.validate else "model_final.pt"
        self.checkpoint = run_dir / "checkpoints" / name
        if not self.checkpoint.is_file():
            raise RuntimeError(f"{self.name}: no checkpoint {self.checkpoint}.")
        seconds = epoch_seconds(log_text)
        # the epochs trained: the final-weights line names the last one (a time budget ends a run before the
        # trainer logs its last "Epoch[n] Complete" line)
        final = re.findall(r"final weights \(epoch (\d+)\)", log_text)
        epochs = int(final[-1]) if final else len(seconds)
        return {"checkpoint": str(self.checkpoint), "epochs": epochs, "wall_s": wall,
                "s_per_epoch": statistics.median(seconds) if seconds else math.nan}

    def cost(self, threads: int) -> dict:
        """Parameters (M), MACs (G) and inference ms/slice (batch 1) at the inference config's network input."""
        import torch

        from .networks import reparameterize_model

        settings = dict(self.inference_settings)
        if self.checkpoint is not None:  # the run's own weights decide what the config derives from them (input)
            settings["ckpt_path"] = str(self.checkpoint)
        parser = bundle_parser(BUNDLE_ROOT, self.task, "inference", settings, [str(self.overlay)])
        network = parser.get_parsed_content("network_def").eval()
        if any(hasattr(m, "switch_to_deploy") for m in network.modules()):
            network = reparameterize_model(network)
        channels = parser.get_parsed_content("network_def#network#in_channels" if parser.get("network_def#network")
                                             else "network_def#in_channels")
        shape = (1, int(channels), *parser.get_parsed_content("roi_size"))
        with torch.no_grad():
            return {"params_m": count_parameters(network) / 1e6, "macs_g": count_macs(network, shape) / 1e9,
                    "ms_per_slice": measure_latency(network, shape, threads=threads, repeats=10)}

    def score(self, cases: list[dict]) -> dict:
        """Run the inference config on ``cases`` and write / return the metrics summary."""
        pred = self.out / "pred"
        run_inference(self.task, cases, self.dataset_dir, self.checkpoint, pred, (str(self.overlay),),
                      self.inference_settings)
        rows, slice_rows = evaluate(cases, self.dataset_dir, pred)
        return write_report(rows, self.out, slice_rows)


def _fmt(value: float, digits: int) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def table(results: dict[str, dict], threads: int) -> str:
    """The comparison as a markdown table."""
    head = ["network", "params (M)", "MACs (G)", "train s/epoch", "epochs", "train min", f"ms/slice ({threads} thr)",
            "lesion Dice [95% CI]", "mDice", "lesion IoU", "HD95 (px)", "RAD (%)", "precision", "recall",
            "slice mDice", "slice mIoU"]
    lines = ["| " + " | ".join(head) + " |", "|" + " --- |" * len(head)]
    for name, r in results.items():
        s = r["summary"]
        dice = s["dice/all"]
        ci = f" [{_fmt(dice.get('ci95_low'), 3)}, {_fmt(dice.get('ci95_high'), 3)}]"
        label = NETWORKS[name].label
        if len(r.get("members", [])) > 1:
            label += f", mean-probability ensemble of {len(r['members'])} runs"
        epochs = r["epochs"]
        cells = [label, _fmt(r["params_m"], 2), _fmt(r["macs_g"], 2), _fmt(r["s_per_epoch"], 1),
                 _fmt(epochs, 0) if isinstance(epochs, float) else str(epochs), _fmt(r["wall_s"] / 60, 1),
                 _fmt(r["ms_per_slice"], 1),
                 _fmt(dice["mean"], 4) + ci]
        cells += [_fmt(s[f"{m}/all"]["mean"], d) for m, d in
                  (("mdice", 4), ("iou", 4), ("hd95", 2), ("rad", 1), ("precision", 3), ("recall", 3))]
        cells += [_fmt(s.get(f"{m}/slices", {}).get("mean", math.nan), 4) for m in ("mdice", "miou")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
