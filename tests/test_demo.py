"""The main job (``make demo``) end to end, with fewer volumes and epochs than the default."""

from __future__ import annotations

import nibabel as nib

from bundle.demo import DemoSettings, run_demo


def test_demo_pipeline_trains_evaluates_and_infers(tmp_path):
    results = run_demo(DemoSettings(tmp_path / "demo", n_volumes=4, epochs=1, roi_size=32))
    assert results["checkpoint"].is_file()
    table = results["metrics"].read_text()
    assert "| dice |" in table and "| rad |" in table
    assert len(results["per_case"].read_text().splitlines()) == 2  # header + the one test volume
    predictions = sorted(p.name for p in results["predictions"].iterdir())
    assert predictions == ["image_seg.png", "volume_flair_seg.nii.gz"]
    source = nib.load(tmp_path / "demo" / "data" / "infer_inputs" / "volume_flair.nii.gz")
    assert nib.load(results["predictions"] / "volume_flair_seg.nii.gz").shape == source.shape[:3]
