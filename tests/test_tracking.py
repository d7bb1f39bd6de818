"""Experiment tracking: ``monai.bundle run ... --tracking mlflow`` (MONAI's built-in settings) logs a training run's
parameters, losses, validation metrics and checkpoints to a local MLflow store, read back here."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

mlflow = pytest.importorskip("mlflow")


def test_training_run_is_logged_to_a_local_mlflow_store(synthetic_lgg, tmp_path):
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", str(ROOT / "configs" / "train.json"),
           "--bundle_root", str(ROOT), "--dataset_dir", str(synthetic_lgg), "--datalist", str(tmp_path / "dl.json"),
           "--output_dir", str(out), "--roi_size", "[32,32]", "--max_epochs", "1", "--val_interval", "1",
           "--batch_size", "2", "--num_samples", "2", "--num_workers", "0", "--cache_rate", "0", "--resume", "false",
           "--tracking", "mlflow", "--tracking_uri", store, "--experiment_name", "lmnet_test", "--run_name", "tiny"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]

    client = mlflow.tracking.MlflowClient(tracking_uri=store)
    experiment = client.get_experiment_by_name("lmnet_test")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_name for r in runs] == ["tiny"]
    run = runs[0]
    assert {"train_loss", "val_mean_dice"} <= set(run.data.metrics), run.data.metrics
    assert run.data.params, "no parameters logged"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
    assert {"checkpoints/model.pt", "checkpoints/model_final.pt"} <= artifacts, artifacts
    local = client.download_artifacts(run.info.run_id, "checkpoints/model.pt", str(tmp_path / "dl"))
    assert open(local, "rb").read() == (out / "checkpoints" / "model.pt").read_bytes()
