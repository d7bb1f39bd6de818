"""The scripts behind the model card: the comparison's parts, the figures, and the result re-computation's scoring
against label files written the way the bundle writes them."""

from __future__ import annotations

import argparse
import json
import math

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from PIL import Image

from bundle.comparison import NETWORKS, ComparisonRun, epoch_seconds, run_seconds, table
from bundle.config import bundle_parser
from bundle.evaluation import compare_summaries, evaluate, parse_settings
from bundle.metrics import case_metrics, slice_metrics, summarize
from bundle.settings import as_bool
from bundle.transforms import SaveLabeld
from scripts import benchmark_training, make_figures
from tests.conftest import ROOT


def test_epoch_seconds_reads_only_the_trainer_lines():
    log = "\n".join([
        "2026 - ignite.engine.engine.SupervisedTrainer - INFO - Epoch[1] Complete. Time taken: 00:00:31.500",
        "2026 - ignite.engine.engine.SupervisedEvaluator - INFO - Epoch[1] Complete. Time taken: 00:00:40.000",
        "2026 - ignite.engine.engine.SupervisedTrainer - INFO - Epoch[2] Complete. Time taken: 01:02:03.250",
    ])
    assert epoch_seconds(log) == [31.5, 3723.25]


def test_run_seconds_sum_the_trainer_runs_of_a_resumed_run():
    log = "\n".join([
        "2026 - ignite.engine.engine.SupervisedEvaluator - INFO - Engine run finished. Time taken: 00:00:40.000",
        "2026 - ignite.engine.engine.SupervisedTrainer - INFO - Engine run finished. Time taken: 00:10:00.500",
        "2026 - ignite.engine.engine.SupervisedTrainer - INFO - Engine run finished. Time taken: 01:00:01.000",
    ])
    assert run_seconds(log) == 4201.5
    assert math.isnan(run_seconds("2026 - SupervisedEvaluator - INFO - Engine run finished. Time taken: 00:00:01"))


def _flags(cmd: list[str]) -> dict[str, list]:
    """``--key value`` pairs of a ``monai.bundle run`` command line, each value parsed as the bundle's command line
    parses it (python-fire), listed per key so a repeated key shows."""
    from fire.parser import DefaultParseValue

    flags: dict[str, list] = {}
    for key, value in zip(cmd[4::2], cmd[5::2], strict=True):
        flags.setdefault(key.removeprefix("--"), []).append(DefaultParseValue(value))
    return flags


def test_comparison_trains_with_the_configs_recipe_and_bundle_args_replace_its_settings(tmp_path):
    """Every network trains with the configs' recipe (only network_def and the schedule replaced), typed as the
    bundle reads it; ``--bundle-arg`` replaces a setting (once, not a second flag) or adds one, and a malformed one
    is refused by name. The plain UNet keeps its own recipe."""
    run = ComparisonRun("basicunet", "lgg", tmp_path / "data", tmp_path / "split.json", tmp_path / "b")
    flags = _flags(run.training_command(tmp_path / "run", 6, 3, 600))
    assert flags["resume"] == ["false"] and as_bool(flags["resume"][0], "resume") is False  # read as train.json does
    assert flags["max_epochs"] == [6] and flags["val_interval"] == [3] and flags["time_budget_s"] == [600]
    assert flags["config_file"] == [[str(ROOT / "configs" / "train.json"), str(tmp_path / "b" / "network.json")]]
    assert "lesion_weight" not in flags  # the recipe is the config's own
    overlay = json.loads((tmp_path / "b" / "network.json").read_text())["network_def"]
    assert overlay["_target_"] == "monai.networks.nets.BasicUNet" and overlay["in_channels"].startswith("$")
    changed = ComparisonRun("basicunet", "lgg", tmp_path / "data", tmp_path / "split.json", tmp_path / "b",
                            parse_settings(["lesion_weight=4.0", "ema_decay=0.98", "lesion_weight=2"]))
    changed_flags = _flags(changed.training_command(tmp_path / "run", 6, 3, 600))
    assert changed_flags["lesion_weight"] == [2] and changed_flags["ema_decay"] == [0.98]
    plain = ComparisonRun("unet_plain", "lgg", tmp_path / "data", tmp_path / "split.json", tmp_path / "p",
                          parse_settings(["lesion_weight=4.0"]))
    plain_flags = _flags(plain.training_command(tmp_path / "run", 100, 101, 900))
    assert plain_flags["lesion_weight"] == [1.0]
    assert plain_flags["train#random_transforms"] == ["$@train#flip_transforms"] and "seed" not in plain_flags
    seeded = ComparisonRun("unet_plain", "lgg", tmp_path / "data", tmp_path / "split.json", tmp_path / "p", seed=3)
    assert _flags(seeded.training_command(tmp_path / "run", 100, 101, 900))["seed"] == [3]  # its own recipe too
    with pytest.raises(ValueError, match=r"--bundle-arg 'lesion_weight': expected KEY=VALUE"):
        parse_settings(["lesion_weight"])
    with pytest.raises(ValueError, match="expected KEY=VALUE"):
        parse_settings(["=4"])


@pytest.mark.parametrize("name", sorted(NETWORKS))
def test_every_compared_network_builds_from_the_configs(name, one_torch_thread, tmp_path):
    run = ComparisonRun(name, "lgg", tmp_path, tmp_path / "split.json", tmp_path / name)
    parser = bundle_parser(ROOT, "lgg", "inference", dict(run.spec.inference_settings), [str(run.overlay)])
    net = parser.get_parsed_content("network_def").eval()
    channels = int(parser.get_parsed_content("network_def#in_channels"))
    with torch.no_grad():
        out = net(torch.rand(1, channels, 64, 64))
    assert out.shape == (1, 2, 64, 64)


def test_table_has_a_row_per_network_and_the_paper_metrics():
    row = {"gt_voxels": 10.0, "pred_voxels": 8.0}
    summary = summarize([{**row, "dice": 0.8, "mdice": 0.9, "iou": 0.7, "miou": 0.85, "hd95": 2.0, "hd": 3.0,
                          "precision": 1.0, "recall": 0.8, "accuracy": 0.99, "rad": -20.0, "has_lesion": 1.0,
                          "predicted_lesion": 1.0}])
    summary.update({"mdice/slices": {"mean": 0.95, "std": 0.1, "n": 40.0},
                    "miou/slices": {"mean": 0.91, "std": 0.1, "n": 40.0}})
    result = {"params_m": 5.31, "macs_g": 5.46, "s_per_epoch": 37.2, "epochs": 6, "wall_s": 600.0,
              "ms_per_slice": 77.0, "summary": summary}
    text = table({"lmnet": result, "unet": result}, threads=2)
    lines = text.splitlines()
    assert len(lines) == 4 and "lesion Dice [95% CI]" in lines[0] and "slice mDice" in lines[0]
    assert lines[2].startswith("| LM-Net") and "| 0.8000 [0.800, 0.800] | 0.9000 | 0.7000 | 2.00 | -20.0 |" in lines[2]
    assert lines[2].endswith("| 0.9500 | 0.9100 |")


def test_scoring_reads_bundle_outputs_in_the_label_orientation(tmp_path):
    """Predictions written by the bundle's own writer (``SaveLabeld``, as inference.json runs it) are named as
    ``prediction_path`` expects and compared in the ground truth's orientation: PNG rows x cols, NIfTI voxels."""
    data, pred = tmp_path / "data", tmp_path / "pred"
    (data / "benign").mkdir(parents=True)
    gt2d = np.zeros((30, 40), np.uint8)  # not square: a transposed read would not even fit
    gt2d[5:15, 10:30] = 255
    Image.fromarray(gt2d).save(data / "benign" / "benign_1_mask.png")
    Image.fromarray(np.zeros((30, 40), np.uint8)).save(data / "benign" / "benign_1.png")
    gt3d = np.zeros((16, 12, 5), np.uint8)
    gt3d[2:6, 3:9, 1:4] = 1
    nib.save(nib.Nifti1Image(gt3d, np.eye(4)), data / "p1_label.nii.gz")
    half2d = (gt2d > 0).astype(np.uint8)
    half2d[:, 20:] = 0  # the left half of the lesion found
    half3d = gt3d.copy()
    half3d[4:] = 0  # the first two of four rows found
    writer = SaveLabeld("pred", output_dir=str(pred))
    for array, source in ((half2d, data / "benign" / "benign_1.png"), (half3d, data / "p1_image.nii.gz")):
        label = MetaTensor(torch.as_tensor(array)[None], affine=torch.eye(4), meta={"filename_or_obj": str(source)})
        writer({"pred": label})
    cases = [{"image": "benign/benign_1.png", "label": "benign/benign_1_mask.png", "case_id": "benign_1"},
             {"image": "p1_image.nii.gz", "label": "p1_label.nii.gz", "case_id": "p1"}]
    rows, slice_rows = evaluate(cases, data, pred)
    assert rows[0]["case"] == "benign_1" and rows[0]["dice"] == pytest.approx(2 * 100 / (200 + 100))
    assert rows[0]["precision"] == 1.0 and rows[0]["recall"] == pytest.approx(0.5)
    assert rows[1]["dice"] == pytest.approx(2 * 36 / (72 + 36)) and rows[1]["precision"] == 1.0
    # the volume's 5 slices, the paper's unit: empty ones (0 and 4) score lesion Dice 1, the others 2 * 12 / 36
    assert [(r["case"], r["slice"]) for r in slice_rows] == [("p1", z) for z in range(5)]
    assert [r["dice"] for r in slice_rows] == pytest.approx([1.0, 2 / 3, 2 / 3, 2 / 3, 1.0])
    with pytest.raises(FileNotFoundError, match="no prediction"):
        evaluate([{"image": "p2_image.nii.gz", "label": "p1_label.nii.gz"}], data, pred)


def test_check_reports_every_difference():
    summary = {"dice/all": {"mean": 0.81, "std": 0.1, "n": 3.0}, "hd95/all": {"mean": math.nan, "std": 0, "n": 0}}
    same = json.loads(json.dumps(summary))
    assert compare_summaries(summary, same) == []
    other = {"dice/all": {"mean": 0.80, "std": 0.2, "n": 2.0}, "iou/all": {"mean": 0.7, "std": 0.1, "n": 3.0}}
    problems = compare_summaries(summary, other)
    assert sorted(problems) == sorted([
        "hd95/all: not in the record", "iou/all: missing from the new summary",
        "dice/all mean: recomputed 0.810000, card records 0.800000",
        "dice/all std: recomputed 0.100000, card records 0.200000",
        "dice/all n: recomputed 3.000000, card records 2.000000",
    ])


def test_training_curves_from_tensorboard_logs(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "logs"))
    for it in range(1, 21):
        writer.add_scalar("train_loss", 1.0 / it, it)
    for epoch in range(1, 5):
        writer.add_scalar("train_mean_dice", 0.2 * epoch, epoch)
    writer.add_scalar("val_mean_dice", 0.5, 2)
    writer.add_scalar("val_mean_dice", 0.7, 4)
    writer.close()
    scalars = make_figures.read_scalars(tmp_path / "logs")
    assert scalars["val_mean_dice"] == [(2, 0.5), (4, pytest.approx(0.7))]
    assert len(scalars["train_loss"]) == 20
    out = tmp_path / "curves.png"
    make_figures.plot_curves(tmp_path / "logs", out, "test")
    with Image.open(out) as img:
        assert img.size[0] > 500 and img.size[1] > 200
    with pytest.raises(FileNotFoundError, match="no TensorBoard event files"):
        make_figures.read_scalars(tmp_path)


def test_example_figure_from_a_volume_and_its_prediction(tmp_path):
    data, pred = tmp_path / "data", tmp_path / "pred"
    data.mkdir()
    image = np.random.default_rng(0).random((16, 12, 5, 3)).astype(np.float32)  # kaggle_3m: 3 channels
    gt = np.zeros((16, 12, 5), np.uint8)
    gt[2:6, 3:9, 1:4] = 1
    nib.save(nib.Nifti1Image(image, np.eye(4)), data / "p1_image.nii.gz")
    nib.save(nib.Nifti1Image(gt, np.eye(4)), data / "p1_label.nii.gz")
    label = MetaTensor(torch.as_tensor(gt)[None], affine=torch.eye(4),
                       meta={"filename_or_obj": str(data / "p1_image.nii.gz")})
    SaveLabeld("pred", output_dir=str(pred))({"pred": label})
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"test": [{"image": "p1_image.nii.gz", "label": "p1_label.nii.gz", "case_id": "p1"}]}))
    out = tmp_path / "examples.png"
    make_figures.plot_examples("lgg", data, split, pred, out, count=2)
    assert Image.open(out).size[0] > 0
    nib.save(nib.Nifti1Image(gt[:, :10], np.eye(4)), data / "p1_label.nii.gz")  # a label of another geometry
    with pytest.raises(ValueError, match="p1_image.nii.gz: image .* differ in shape"):
        make_figures.plot_examples("lgg", data, split, pred, out, count=2)


def test_training_step_benchmark_times_the_train_config_trainer(one_torch_thread):
    from bundle.benchmark import REFERENCE_NETWORKS
    from bundle.training_benchmark import time_training_step

    times = time_training_step(ROOT, batch=2, size=32, repeats=2, warmup=1, threads=1)
    assert len(times) == 2 and min(times) > 0
    unet = {**REFERENCE_NETWORKS["basicunet"][1], "spatial_dims": 2, "in_channels": 1, "out_channels": 2}
    assert len(time_training_step(ROOT, network_def=unet, batch=2, size=32, repeats=1, warmup=1, threads=1)) == 1
    # the script's own path: a fresh process outside the bundle (the config's `$import bundle` runs before its
    # initialize puts the bundle on sys.path)
    args = argparse.Namespace(batch=2, size=32, repeats=1, threads=1)
    assert len(benchmark_training._run_step(ROOT, None, args, benchmark_training.BF16)) == 1


def test_training_step_benchmark_compiles_the_configs_network():
    """--compile's override gives the trainer the training config's own network (the module the optimizer updates)
    under torch.compile (compiling itself happens at the first step, which CI does not run: it takes minutes)."""
    from bundle.config import bundle_parser

    parser = bundle_parser(ROOT, "lgg", "train", {"device": "$torch.device('cpu')",
                                                   **benchmark_training.COMPILED_TRAINER_NETWORK})
    compiled = parser.get_parsed_content("train#trainer#network")
    assert isinstance(compiled, torch._dynamo.eval_frame.OptimizedModule)
    assert compiled._orig_mod is parser.get_parsed_content("network")
    optimized = {id(p) for group in parser.get_parsed_content("optimizer").param_groups for p in group["params"]}
    assert optimized == {id(p) for p in compiled._orig_mod.parameters()}


def test_summary_has_a_bootstrap_interval_and_per_slice_numbers(tmp_path):
    from bundle.metrics import bootstrap_interval
    from bundle.reports import SegmentationReport, write_report

    rows = [{"case": f"c{i}", **case_metrics(p, g)} for i, (p, g) in enumerate(_pairs())]
    slices = [{"case": "c0", **m} for m in slice_metrics(*_pairs()[0])]
    summary = write_report(rows, tmp_path, slices)
    dice = [r["dice"] for r in rows]
    assert (summary["dice/all"]["ci95_low"], summary["dice/all"]["ci95_high"]) == bootstrap_interval(dice)
    assert summary["dice/all"]["ci95_low"] <= summary["dice/all"]["mean"] <= summary["dice/all"]["ci95_high"]
    assert summary["mdice/slices"]["n"] == len(slices)
    assert json.loads((tmp_path / "summary.json").read_text()) == json.loads(json.dumps(summary))
    table = SegmentationReport.table(summary, len(rows))
    assert "95% CI" in table and "mdice per 2D slice" in table


def test_bootstrap_interval_is_seeded_and_narrows_with_more_cases():
    from bundle.metrics import bootstrap_interval

    few = bootstrap_interval([0.2, 0.9, 0.5])
    assert few == bootstrap_interval([0.2, 0.9, 0.5]) and few[0] < 0.5333 < few[1]
    many = bootstrap_interval([0.2, 0.9, 0.5] * 30)
    assert many[1] - many[0] < few[1] - few[0]
    assert all(math.isnan(v) for v in bootstrap_interval([]))


def _pairs():
    pairs = []
    for shift in range(4):
        g = np.zeros((12, 12, 4), np.uint8)
        g[3:8, 3:8, 1:3] = 1
        p = np.roll(g, shift, axis=0)
        pairs.append((p, g))
    return pairs


def test_failure_causes_name_what_went_wrong():
    from bundle.evaluation import failure_cause

    gt = np.zeros((20, 20, 4), np.uint8)
    gt[5:10, 5:10, 1:3] = 1
    assert failure_cause(np.zeros_like(gt), gt) == "missed lesion: nothing predicted"
    far = np.zeros_like(gt)
    far[15:19, 15:19, 0:4] = 1
    cause = failure_cause(far, gt)
    assert cause.startswith("missed lesion: every predicted region lies away")
    assert "false region kept: 64 of 64" in cause
    small = np.zeros_like(gt)
    small[5:7, 5:7, 1] = 1
    assert failure_cause(small, gt) == "under-segmentation: recall 0.08"
    both = gt.copy()
    both[12:20, 12:20, :] = 1  # the lesion found, and a larger false region kept
    assert failure_cause(both, gt).startswith("false region kept: 256 of 306")
    assert failure_cause(np.zeros_like(gt), np.zeros_like(gt)) == "no lesion, none predicted"


def test_comparison_runs_end_to_end_on_synthetic_volumes(synthetic_lgg, tmp_path):
    """scripts.compare trains a network through the configs (probe epoch, budgeted run) and stops there with
    --train-only; --run then scores that finished run (inference config on the test split) without training it again,
    and prints the table with every column filled."""
    from bundle.data.datalist import build_datalist, write_datalist
    from scripts import compare

    split = write_datalist(build_datalist(synthetic_lgg, fractions=(0.5, 0.17, 0.33)), tmp_path / "split.json")
    common = ["--task", "lgg", "--dataset-dir", str(synthetic_lgg), "--split-file", str(split),
              "--models", "basicunet", "--threads", "1", "--bundle-arg", "roi_size=[32,32]",
              "--bundle-arg", "num_workers=0", "--bundle-arg", "tta_flips=[]"]
    trained_dir = tmp_path / "trained"
    assert compare.main([*common, "--budget-minutes", "0.3", "--output", str(trained_dir), "--train-only"]) == 0
    run_dir = trained_dir / "lgg" / "basicunet" / "train"
    trained = json.loads((trained_dir / "lgg" / "trained.json").read_text())["basicunet"]
    assert trained["epochs"] >= 1 and trained["wall_s"] > 0 and (run_dir / "checkpoints" / "model.pt").is_file()
    assert not (trained_dir / "lgg" / "table.md").exists() and not (run_dir.parent / "pred").exists()

    scored = tmp_path / "scored"
    assert compare.main([*common, "--output", str(scored), "--run", f"basicunet={run_dir}"]) == 0
    assert not (scored / "lgg" / "basicunet" / "probe").exists()  # nothing trained again
    run = json.loads((scored / "lgg" / "results.json").read_text())["basicunet"]
    assert run["epochs"] == trained["epochs"] and run["wall_s"] == pytest.approx(trained["wall_s"], abs=0.1)
    assert run["s_per_epoch"] > 0 and run["ms_per_slice"] > 0
    assert 0 <= run["summary"]["dice/all"]["mean"] <= 1 and "mdice/slices" in run["summary"]
    table_text = (scored / "lgg" / "table.md").read_text()
    assert "MONAI BasicUNet" in table_text and "n/a |" not in table_text.split("\n")[2].split("|")[4]


@pytest.mark.parametrize("name", ["lmnet", "unet_plain"])
def test_comparison_scores_several_runs_as_their_ensemble(name, synthetic_lgg, one_torch_thread, tmp_path):
    """--run NAME=A,B: the two runs' checkpoints become one ensemble file that the inference config runs (twice one
    network's parameters and MACs), with the runs' wall times summed; a run without its log leaves the epochs
    unknown. LM-Net's definition builds the ensemble itself, another network's is wrapped."""
    from bundle.checkpoints import read_state_dict, save_weights
    from bundle.data.datalist import build_datalist, write_datalist
    from bundle.evaluation import read_split
    from bundle.networks import one_member
    from bundle.networks.ensemble import member_count

    split = write_datalist(build_datalist(synthetic_lgg, fractions=(0.5, 0.17, 0.33)), tmp_path / "split.json")
    run = ComparisonRun(name, "lgg", synthetic_lgg, split, tmp_path / name,
                        {"roi_size": [32, 32], "num_workers": 0, "tta_flips": []})
    runs = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        parser = bundle_parser(ROOT, "lgg", "inference", dict(run.inference_settings), [str(run.overlay)])
        run_dir = tmp_path / f"seed{seed}" / "train"
        checkpoint = run_dir / "checkpoints" / ("model.pt" if run.spec.validate else "model_final.pt")
        save_weights(one_member(parser.get_parsed_content("network_def")), checkpoint)
        (run_dir / "wall_s.txt").write_text(f"{60.0 * seed}\n")
        runs.append(run_dir)
    single = run.adopt(runs[0])
    single_cost = run.cost(threads=1)
    facts = run.adopt(runs)
    assert member_count(read_state_dict(facts["checkpoint"])) == 2 and len(facts["members"]) == 2
    assert facts["wall_s"] == 180.0 and math.isnan(facts["epochs"]) and single["epochs"] == 0
    cost = run.cost(threads=1)
    assert cost["params_m"] == pytest.approx(2 * single_cost["params_m"])
    assert cost["macs_g"] == pytest.approx(2 * single_cost["macs_g"])
    summary = run.score(read_split(split, "test"))
    assert 0 <= summary["dice/all"]["mean"] <= 1
    text = table({name: {**facts, **cost, "summary": summary}}, threads=1)
    assert "mean-probability ensemble of 2 runs" in text and "| n/a | 3.0 |" in text


def test_comparison_refuses_a_run_of_a_network_it_does_not_compare(tmp_path):
    from scripts import compare

    with pytest.raises(SystemExit):
        compare.main(["--task", "lgg", "--dataset-dir", str(tmp_path), "--models", "basicunet",
                      "--run", f"lmnet={tmp_path}"])
