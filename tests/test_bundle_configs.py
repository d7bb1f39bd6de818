"""The bundle's configs through MONAI's own tools: metadata schema, network in/out, TorchScript export, and every
workflow (train, evaluate, inference, multi-GPU) run by ConfigWorkflow / ``monai.bundle run`` on generated data."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.bundle import ConfigWorkflow
from monai.transforms import Compose
from PIL import Image

from bundle.checkpoints import context_slices_of
from bundle.data.datalist import build_datalist, write_datalist
from bundle.gpu_check import free_tcp_port
from bundle.networks import LMNet, network_for_weights
from bundle.training_state import latest_checkpoint
from tests.conftest import ROOT, SHARED_DATA

CONFIGS = ROOT / "configs"
SCHEMA = ROOT / "tests" / "data" / "meta_schema_20240725.json"
FAST = {"roi_size": [32, 32], "num_workers": 0, "sw_batch_size": 8}


def _workflow(files: list[str], workflow_type: str, **overrides) -> ConfigWorkflow:
    config = [str(CONFIGS / f) for f in files]
    return ConfigWorkflow(
        config_file=config if len(config) > 1 else config[0],
        meta_file=str(CONFIGS / "metadata.json"),
        logging_file=str(CONFIGS / "logging.conf"),
        workflow_type=workflow_type,
        bundle_root=str(ROOT),
        **overrides,
    )


def _bundle_cli(*args: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def random_checkpoint(tmp_path_factory) -> Path:
    """A training-form state_dict of the default LMNet (as CheckpointSaver writes model.pt)."""
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "model.pt"
    torch.save(LMNet(spatial_dims=2, in_channels=1, out_channels=2).state_dict(), path)
    return path


def test_metadata_is_valid_and_one_file():
    result = _bundle_cli("verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", str(SCHEMA))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "metadata is verified with no error" in result.stdout + result.stderr
    top = ROOT / "metadata.json"
    assert top.is_symlink() and top.resolve() == (CONFIGS / "metadata.json").resolve()
    for path in CONFIGS.rglob("*.json"):  # the model zoo's formatting rule: 4-space indented JSON
        text = path.read_text()
        assert text == json.dumps(json.loads(text), indent=4) + "\n", f"{path} is not 4-space formatted JSON"


def test_one_version_everywhere():
    import re

    import bundle

    meta = json.loads((CONFIGS / "metadata.json").read_text())
    project = re.search(r'^version = "([^"]+)"', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    assert project is not None, "pyproject.toml names no version"
    assert meta["version"] == bundle.__version__ == project.group(1)
    assert meta["version"] in meta["changelog"]


def test_verify_net_in_out():
    result = _bundle_cli(
        "verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json",
        "--config_file", "configs/inference.json", "--bundle_root", ".",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


def test_ckpt_export_torchscript(random_checkpoint, tmp_path):
    """The model zoo's export of the shipped weights (network_def follows models/model.pt), and of a weights file of
    one's own, given as ckpt_path too so that network_def follows it (members, input channels)."""
    shipped = tmp_path / "shipped.ts"
    result = _bundle_cli(
        "ckpt_export", "network_def", "--filepath", str(shipped), "--ckpt_file", "models/model.pt",
        "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json", "--bundle_root", ".",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    channels = 1 + 2 * context_slices_of(ROOT / "models" / "model.pt")
    reference = network_for_weights(LMNet(in_channels=channels), ROOT / "models" / "model.pt").eval()
    reference.load_state_dict(torch.load(ROOT / "models" / "model.pt", weights_only=True))
    x = torch.rand(1, channels, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(torch.jit.load(str(shipped))(x), reference(x), atol=1e-5, rtol=1e-5)

    out = tmp_path / "model.ts"
    result = _bundle_cli(
        "ckpt_export", "network_def", "--filepath", str(out), "--ckpt_file", str(random_checkpoint),
        "--meta_file", "configs/metadata.json", "--config_file", "configs/inference.json", "--bundle_root", ".",
        "--ckpt_path", str(random_checkpoint),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = torch.jit.load(str(out))
    net = LMNet(spatial_dims=2, in_channels=1, out_channels=2).eval()
    net.load_state_dict(torch.load(random_checkpoint, weights_only=True))
    x = torch.rand(1, 1, 64, 80)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), atol=1e-5, rtol=1e-5)


def _train(tmp_path: Path, dataset: Path, extra: list[str] = (), before_run=None, **overrides) -> ConfigWorkflow:
    """Train with ``overrides`` (``before_run(workflow)`` is called after initialising, e.g. to hook the network)."""
    settings = {"max_epochs": 2, "val_interval": 1, "batch_size": 2, "num_samples": 2, **FAST, **overrides}
    wf = _workflow(
        ["train.json", *extra], "train", dataset_dir=str(dataset), output_dir=str(tmp_path / "train"),
        datalist=str(tmp_path / "datalist.json"), **settings,
    )
    wf.initialize()
    assert wf.check_properties() == []  # no required property missing
    if before_run is not None:
        before_run(wf)
    wf.run()
    wf.finalize()
    return wf


def test_train_workflow_lgg(synthetic_lgg, tmp_path):
    wf = _train(tmp_path, synthetic_lgg)
    assert wf.max_epochs == 2 and wf.val_interval == 1
    trainer = wf.trainer
    assert trainer.state.epoch == 2
    ckpts = tmp_path / "train" / "checkpoints"
    assert (ckpts / "model.pt").is_file()  # best validation Dice
    final = torch.load(ckpts / "model_final.pt", weights_only=True)  # the weights as training left them
    trained = wf.parser.get_parsed_content("network").state_dict()
    assert set(final) == set(trained)
    assert all(torch.equal(final[k], trained[k].cpu()) for k in trained)
    latest = list(ckpts.glob("latest*.pt"))
    assert [p.name for p in latest] == ["latest_checkpoint_2.pt"]
    state = torch.load(latest[0], weights_only=False)
    assert {"model", "optimizer", "lr_scheduler", "trainer"} <= set(state)
    datalist = json.loads((tmp_path / "datalist.json").read_text())
    assert len(datalist["training"]) == 4 and len(datalist["validation"]) == 1 and len(datalist["test"]) == 1


def test_bf16_training_runs_the_forward_in_bf16_and_keeps_fp32_weights(synthetic_lgg, tmp_path):
    """``precision bf16``: the trainer's forward computes in bfloat16 (CPU autocast), validation and the saved
    weights stay fp32."""
    seen = []

    def hook_first_conv(wf):
        network = wf.parser.get_parsed_content("network")
        first_conv = next(m for m in network.modules() if isinstance(m, torch.nn.Conv2d))
        first_conv.register_forward_hook(lambda m, i, o: seen.append((m.training, o.dtype)))

    wf = _train(tmp_path, synthetic_lgg, before_run=hook_first_conv, max_epochs=1, precision="bf16")
    assert wf.trainer.state.epoch == 1 and math.isfinite(float(wf.trainer.state.output[0]["loss"]))
    assert {dtype for training, dtype in seen if training} == {torch.bfloat16}
    assert {dtype for training, dtype in seen if not training} == {torch.float32}  # validation
    final = torch.load(tmp_path / "train" / "checkpoints" / "model_final.pt", weights_only=True)
    assert all(v.dtype != torch.bfloat16 and torch.isfinite(v.float()).all() for v in final.values())


def test_weight_ema_is_what_validates_checkpoints_and_ships(synthetic_lgg, tmp_path):
    """With ``ema_decay`` the validator scores the averaged weights, ``model.pt`` / ``model_final.pt`` hold them,
    and the resumable checkpoint carries the average, so a resumed run continues it instead of restarting it."""
    wf = _train(tmp_path, synthetic_lgg, max_epochs=1, ema_decay=0.9)
    ema = wf.parser.get_parsed_content("ema")
    trained = wf.parser.get_parsed_content("network")
    iterations = wf.trainer.state.iteration
    assert ema.enabled and ema.updates == iterations > 1
    assert wf.parser.get_parsed_content("validate#evaluator").network is ema.network
    assert ema.network is not trained
    ckpts = tmp_path / "train" / "checkpoints"
    final = torch.load(ckpts / "model_final.pt", weights_only=True)
    averaged = ema.network.state_dict()
    assert set(final) == set(trained.state_dict())
    assert all(torch.equal(final[k], averaged[k].cpu()) for k in final)
    assert not all(torch.equal(final[k], v.cpu()) for k, v in trained.state_dict().items())
    assert set(torch.load(ckpts / "model.pt", weights_only=True)) == set(final)
    latest = torch.load(ckpts / "latest_checkpoint_1.pt", weights_only=False)
    assert int(latest["ema"]["n_averaged"]) == iterations

    resumed = _train(tmp_path, synthetic_lgg, max_epochs=2, ema_decay=0.9)  # same output folder: resumes at epoch 2
    assert resumed.trainer.state.epoch == 2
    assert resumed.parser.get_parsed_content("ema").updates == resumed.trainer.state.iteration == 2 * iterations


def test_weight_ema_switched_on_when_resuming_starts_the_average_then(synthetic_lgg, tmp_path, capfd):
    """A checkpoint written without an average resumes with ``ema_decay`` on: the average starts at the resumed
    epoch, and the log says so (logging.conf sends it to the console)."""
    first = _train(tmp_path, synthetic_lgg, max_epochs=1)
    per_epoch = first.trainer.state.iteration
    resumed = _train(tmp_path, synthetic_lgg, max_epochs=2, ema_decay=0.9)
    assert resumed.trainer.state.epoch == 2
    assert resumed.parser.get_parsed_content("ema").updates == per_epoch  # epoch 2 only
    out, err = capfd.readouterr()
    assert "holds no 'ema' (it was written without one): it starts now" in out + err


def test_without_weight_ema_the_trained_network_validates(synthetic_lgg, tmp_path):
    """``ema_decay`` 0 (the default) keeps no average: the validator scores the trained network, and the resumable
    checkpoint gets no ``ema`` entry (so it stays what runs before 0.5.0 wrote; resuming one:
    ``test_training_killed_mid_run_resumes``)."""
    wf = _workflow(["train.json"], "train", dataset_dir=str(synthetic_lgg), output_dir=str(tmp_path / "train"),
                   datalist=str(tmp_path / "datalist.json"), **FAST)
    wf.initialize()
    ema = wf.parser.get_parsed_content("ema")
    assert not ema.enabled and ema.checkpoint_items() == {}
    assert wf.parser.get_parsed_content("validate#evaluator").network is wf.parser.get_parsed_content("network")


def test_training_splits_select_what_trains(synthetic_lgg, tmp_path):
    """``training_splits`` picks the datalist splits the trainer sees: training only by default, training and
    validation for a final refit; a split the datalist lacks is refused by name."""
    datalist = tmp_path / "datalist.json"
    write_datalist(build_datalist(synthetic_lgg), datalist)
    splits = json.loads(datalist.read_text())

    def trained_cases(**overrides) -> list[str]:
        wf = _workflow(["train.json"], "train", dataset_dir=str(synthetic_lgg), output_dir=str(tmp_path / "train"),
                       datalist=str(datalist), **FAST, **overrides)
        wf.initialize()
        return [item["case_id"] for item in wf.parser.get_parsed_content("train#dataset#data")]

    assert trained_cases() == [item["case_id"] for item in splits["training"]]
    both = trained_cases(training_splits=["training", "validation"])
    assert both == [item["case_id"] for item in splits["training"] + splits["validation"]]
    assert not set(both) & {item["case_id"] for item in splits["test"]}
    with pytest.raises(RuntimeError) as raised:
        trained_cases(training_splits=["training", "valdiation"])
    cause = raised.value.__cause__ or raised.value.__context__
    assert isinstance(cause, ValueError) and "valdiation" in str(cause)


def test_negative_crops_centre_on_tissue_above_crop_neg_min_intensity(synthetic_lgg, tmp_path):
    """``crop_neg_min_intensity`` keeps background crop centres on tissue (normalised image above it); the default
    (-1) draws them anywhere off the lesion, air included. 1 x 1 crops are their own centre."""
    datalist = tmp_path / "datalist.json"
    write_datalist(build_datalist(synthetic_lgg), datalist)

    def centre_values(**overrides) -> list[tuple[float, float]]:
        wf = _workflow(["train.json"], "train", dataset_dir=str(synthetic_lgg), output_dir=str(tmp_path / "train"),
                       datalist=str(datalist), **{**FAST, "crop_size": [1, 1], "crop_pos": 0, "crop_neg": 1,
                                                  "num_samples": 64, **overrides})
        wf.initialize()
        sample = Compose(wf.parser.get_parsed_content("base_transforms")
                         + wf.parser.get_parsed_content("train#sampling_transforms"))
        sample.set_random_state(seed=0)
        crops = sample(wf.parser.get_parsed_content("train#dataset#data")[0])
        return [(float(c["image"].max()), float(c["label"].max())) for c in crops]

    tissue = centre_values(crop_neg_min_intensity=0.3)
    assert len(tissue) == 64 and all(value > 0.3 and label == 0 for value, label in tissue)
    anywhere = centre_values()
    assert all(label == 0 for _, label in anywhere) and min(value for value, _ in anywhere) <= 0.3


@pytest.mark.parametrize("value,expected", [("false", False), ("False", False), ("true", True), (False, False)])
def test_amp_from_the_command_line(synthetic_lgg, tmp_path, value, expected):
    """``--amp false`` arrives as the string "false": trainer, validator and inference evaluator must read it as off."""
    datalist = tmp_path / "datalist.json"
    write_datalist(build_datalist(synthetic_lgg), datalist)
    wf = _workflow(["train.json"], "train", dataset_dir=str(synthetic_lgg), output_dir=str(tmp_path / "train"),
                   datalist=str(datalist), amp=value, **FAST)
    wf.initialize()
    assert wf.parser.get_parsed_content("train#trainer").amp is expected
    assert wf.parser.get_parsed_content("validate#evaluator").amp is expected
    infer = _workflow(["inference.json"], "infer", dataset_dir=str(synthetic_lgg), output_dir=str(tmp_path / "infer"),
                      amp=value, **FAST)
    infer.initialize()
    assert infer.parser.get_parsed_content("evaluator").amp is expected


def test_train_workflow_busi_overlay(synthetic_busi, tmp_path):
    wf = _train(tmp_path, synthetic_busi, extra=["busi/train.json"], max_epochs=1)
    assert wf.trainer.state.epoch == 1
    assert (tmp_path / "train" / "checkpoints" / "model.pt").is_file()


def test_training_killed_mid_run_resumes(synthetic_lgg, tmp_path):
    """Kill a training process after its first epoch's checkpoint; the rerun continues at epoch 2, not 1."""
    args = [
        "run", "--config_file", "configs/train.json", "--bundle_root", ".", "--dataset_dir", str(synthetic_lgg),
        "--output_dir", str(tmp_path / "train"), "--datalist", str(tmp_path / "datalist.json"),
        "--max_epochs", "40", "--val_interval", "100", "--batch_size", "2", "--num_samples", "2",
        "--roi_size", "[32, 32]", "--num_workers", "0",
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    ckpts = tmp_path / "train" / "checkpoints"
    proc = subprocess.Popen([sys.executable, "-m", "monai.bundle", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(600):
            if list(ckpts.glob("latest*.pt")) or proc.poll() is not None:
                break
            subprocess.run(["sleep", "0.5"])
    finally:
        proc.kill()
        proc.wait()
    saved = latest_checkpoint(ckpts)  # the newest, as the resumed run picks it
    assert saved is not None, "no checkpoint was written before the kill"
    trainer_state = torch.load(saved, weights_only=False)["trainer"]
    epoch_done = trainer_state["iteration"] // trainer_state["epoch_length"]
    assert 1 <= epoch_done < 40
    args[args.index("40")] = str(epoch_done + 1)  # one more epoch is enough to show where it starts
    result = _bundle_cli(*args)
    assert result.returncode == 0, result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert f"Epoch: {epoch_done + 1}/{epoch_done + 1}" in log
    assert "Epoch: 1/" not in log
    remaining = list(ckpts.glob("latest*.pt"))
    assert len(remaining) == 1
    final = torch.load(remaining[0], weights_only=False)
    assert final["trainer"]["iteration"] // final["trainer"]["epoch_length"] == epoch_done + 1
    assert final["lr_scheduler"]["last_epoch"] == epoch_done + 1
    # AdamW's step counts continue from the saved state (a fresh optimizer would count only the last epoch)
    steps = {float(s["step"]) for s in final["optimizer"]["state"].values()}
    assert steps == {float(final["trainer"]["iteration"])}


def test_evaluate_workflow_writes_metrics(synthetic_lgg, random_checkpoint, tmp_path):
    wf = _workflow(
        ["train.json", "evaluate.json"], "eval", dataset_dir=str(synthetic_lgg), output_dir=str(tmp_path / "eval"),
        datalist=str(tmp_path / "datalist.json"), ckpt_path=str(random_checkpoint), **FAST,
    )
    wf.initialize()
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()
    rows = (tmp_path / "eval" / "metrics.csv").read_text().splitlines()
    assert rows[0].startswith("case,dice,mdice,iou,miou,hd95,hd,precision,recall,accuracy,rad")
    datalist = json.loads((tmp_path / "datalist.json").read_text())
    assert len(rows) == 2 and rows[1].startswith(datalist["test"][0]["case_id"] + ",")
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert 0.0 <= summary["accuracy/all"]["mean"] <= 1.0
    assert "| dice |" in (tmp_path / "eval" / "summary.md").read_text()


def test_evaluate_workflow_runs_an_ensemble_file(synthetic_lgg, random_checkpoint, tmp_path):
    from bundle.checkpoints import read_state_dict, save_weights
    from bundle.networks import ProbabilityEnsemble
    from bundle.networks.ensemble import ensemble_state_dict

    second = {k: v + 0.01 * torch.randn_like(v) if v.is_floating_point() else v
              for k, v in read_state_dict(random_checkpoint).items()}
    ensemble = save_weights(ensemble_state_dict([read_state_dict(random_checkpoint), second]), tmp_path / "e.pt")
    wf = _workflow(
        ["train.json", "evaluate.json"], "eval", dataset_dir=str(synthetic_lgg), output_dir=str(tmp_path / "eval"),
        datalist=str(tmp_path / "datalist.json"), ckpt_path=str(ensemble), **FAST,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    assert isinstance(wf.evaluator.network, ProbabilityEnsemble) and len(wf.evaluator.network.members) == 2
    assert len((tmp_path / "eval" / "metrics.csv").read_text().splitlines()) == 2


def test_inference_workflow_nifti_and_png(synthetic_lgg, synthetic_busi, random_checkpoint, tmp_path, capfd):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    volume = inputs / "vol_image.nii.gz"
    volume.write_bytes((synthetic_lgg / "SYN_000_image.nii.gz").read_bytes())
    png = inputs / "us.png"
    png.write_bytes((synthetic_busi / "benign" / "benign_1.png").read_bytes())
    wf = _workflow(
        ["inference.json"], "infer", dataset_dir=str(inputs), output_dir=str(tmp_path / "out"),
        ckpt_path=str(random_checkpoint), **FAST,
    )
    wf.initialize()
    assert wf.check_properties() == []
    wf.run()
    wf.finalize()
    source = nib.load(volume)
    label = nib.load(tmp_path / "out" / "vol_image_seg.nii.gz")
    assert label.shape == source.shape[:3]
    np.testing.assert_allclose(label.affine, source.affine, atol=1e-5)
    assert set(np.unique(np.asarray(label.dataobj))) <= {0, 1}
    out_png = Image.open(tmp_path / "out" / "us_seg.png")
    assert out_png.size == Image.open(png).size
    assert set(np.unique(np.asarray(out_png))) <= {0, 255}
    out, err = capfd.readouterr()
    assert "Engine run finished" in out + err  # the config's logging reaches the console
    assert "unable to load" not in out + err  # ... without a line per reader that cannot read a file


def test_multi_gpu_config_runs_with_torchrun_on_cpu(synthetic_lgg, tmp_path):
    """Two gloo processes on the CPU stand in for two GPUs: DDP, DistributedSampler, destroy_process_group."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    # two validation cases, so each rank's DistributedSampler gets one
    write_datalist(build_datalist(synthetic_lgg, fractions=(0.5, 0.3, 0.2)), tmp_path / "datalist.json")
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(free_tcp_port()),
        "-m", "monai.bundle", "run", "--config_file", "['configs/train.json', 'configs/multi_gpu_train.json']",
        "--bundle_root", ".", "--dataset_dir", str(synthetic_lgg), "--output_dir", str(tmp_path / "ddp"),
        "--datalist", str(tmp_path / "datalist.json"), "--max_epochs", "1", "--val_interval", "1",
        "--batch_size", "1", "--num_samples", "2", "--roi_size", "[32, 32]", "--num_workers", "0",
        "--ema_decay", "0.9",  # the weight average of a DDP-wrapped network
    ]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]
    assert (tmp_path / "ddp" / "checkpoints" / "model.pt").is_file()
    assert len(list((tmp_path / "ddp" / "checkpoints").glob("latest*.pt"))) == 1
    final = torch.load(tmp_path / "ddp" / "checkpoints" / "model_final.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in final)  # unwrapped from DDP: loads into a plain LMNet
    LMNet(in_channels=3).load_state_dict(final, strict=True)  # the default input follows the shipped weights: 2.5D
    assert "weight EMA (decay 0.9)" in result.stdout + result.stderr
    assert "ema" in torch.load(latest_checkpoint(tmp_path / "ddp" / "checkpoints"), weights_only=False)


@pytest.mark.parametrize(
    "dataset,overlays",
    [("lgg", ["train.json", "evaluate.json"]), ("busi", ["train.json", "evaluate.json", "busi/train.json"])],
)
def test_evaluate_on_real_test_split(dataset, overlays, random_checkpoint, tmp_path):
    """End to end on the shared real data's test split (skipped where ../shared/data is absent). With random
    weights the numbers mean nothing; the test shows the pipeline reads, infers and scores every test case."""
    folder = SHARED_DATA / dataset
    if not folder.is_dir():
        pytest.skip(f"{folder} is not present")
    wf = _workflow(
        overlays, "eval", dataset_dir=str(folder), output_dir=str(tmp_path / "eval"),
        datalist=str(tmp_path / "datalist.json"), ckpt_path=str(random_checkpoint), num_workers=0,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    test_cases = json.loads((tmp_path / "datalist.json").read_text())["test"]
    rows = (tmp_path / "eval" / "metrics.csv").read_text().splitlines()[1:]
    assert sorted(r.split(",")[0] for r in rows) == sorted(c["case_id"] for c in test_cases)


def test_batch_predictor_reachable_from_inference_config(synthetic_lgg, random_checkpoint, tmp_path):
    """``monai.bundle run predict`` runs the batch predictor (manifest, labels on the source grid)."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    (inputs / "a_image.nii.gz").write_bytes((synthetic_lgg / "SYN_002_image.nii.gz").read_bytes())
    result = _bundle_cli(
        "run", "predict", "--config_file", "configs/inference.json", "--bundle_root", ".", "--dataset_dir",
        str(inputs), "--output_dir", str(tmp_path / "out"), "--ckpt_path", str(random_checkpoint),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = (tmp_path / "out" / "manifest.csv").read_text().splitlines()
    assert len(manifest) == 2 and ",done," in manifest[1]
    label = nib.load(tmp_path / "out" / "a_image_label.nii.gz")
    source = nib.load(inputs / "a_image.nii.gz")
    assert label.shape == source.shape[:3]
    np.testing.assert_allclose(label.affine, source.affine, atol=1e-5)


def test_time_budget_stops_training_between_epochs(synthetic_lgg, tmp_path):
    wf = _train(tmp_path, synthetic_lgg, max_epochs=20, time_budget_s=0.001)
    assert wf.trainer.state.epoch == 1  # the first epoch already exceeds the budget: stop, checkpoint whole
    assert [p.name for p in (tmp_path / "train" / "checkpoints").glob("latest*.pt")] == ["latest_checkpoint_1.pt"]


def test_multi_gpu_config_properties(synthetic_lgg, tmp_path, monkeypatch):
    """The multi-GPU overlay through ConfigWorkflow: a one-process gloo group, check_properties, finalize."""
    for key, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": "29531"}.items():
        monkeypatch.setenv(key, value)
    wf = _workflow(
        ["train.json", "multi_gpu_train.json"], "train", dataset_dir=str(synthetic_lgg),
        output_dir=str(tmp_path / "ddp"), datalist=str(tmp_path / "datalist.json"), **FAST,
    )
    wf.initialize()
    try:
        assert torch.distributed.is_initialized()
        assert wf.check_properties() == []
    finally:
        wf.finalize()
    assert not torch.distributed.is_initialized()
    # ignite's own record of the group is reset too: a later workflow in this process must not ask a gone group
    import ignite.distributed as idist

    assert idist.get_world_size() == 1 and idist.get_rank() == 0


def _distinct_weights(path: Path) -> dict[str, torch.Tensor]:
    """A state dict unlike the initialisation the workflows draw (they seed 0; this one is drawn with seed 123)."""
    torch.manual_seed(123)
    state = LMNet().state_dict()
    torch.save(state, path)
    return state


def test_train_starts_from_init_weights(synthetic_lgg, tmp_path):
    init = _distinct_weights(tmp_path / "init.pt")
    # learning rate 0: parameters stay where they started, so they must equal the file (BN statistics move)
    wf = _train(tmp_path, synthetic_lgg, max_epochs=1, init_weights=str(tmp_path / "init.pt"), learning_rate=0.0)
    network = wf.parser.get_parsed_content("network")
    assert set(network.state_dict()) == set(init)
    for name, param in network.named_parameters():
        assert torch.equal(param.detach(), init[name]), f"{name} did not start from the file"
    assert not torch.equal(init["head.weight"], LMNet().state_dict()["head.weight"])  # not a default init


def test_train_refuses_init_weights_that_do_not_fit(synthetic_lgg, tmp_path):
    torch.save(LMNet(features=(8, 16, 32, 64, 128), lft_heads=2, gft_heads=8).state_dict(), tmp_path / "small.pt")
    with pytest.raises(RuntimeError, match="load_weights") as raised:  # MONAI wraps the expression's error
        _train(tmp_path, synthetic_lgg, max_epochs=1, init_weights=str(tmp_path / "small.pt"))
    cause = raised.value.__cause__ or raised.value.__context__
    assert isinstance(cause, ValueError) and "small.pt does not fit LMNet" in str(cause)
