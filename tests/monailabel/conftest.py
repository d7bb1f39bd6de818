"""Fixtures of the MONAI Label tests: the MONAI Label environment, a bundle copy with its own weights, a studies
folder, and the bundle's own predictions on it (``python -m monai.bundle run``, main environment)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from bundle.gpu_check import free_tcp_port
from tests.io.helpers import write_mr_series

from .helpers import ROOT, Server, copy_bundle, run_bundle_inference, write_studies, write_weights

VENV = Path(os.environ.get("LMNET_MONAILABEL_VENV", ROOT / ".venv-monailabel"))


@dataclass
class Workspace:
    bundle_root: Path
    studies: Path
    inputs: dict[str, Path]  # image id -> file (studies folder; series_1: the DICOM series as NIfTI)
    dicom_series: Path  # a DICOM series folder (MR, oblique), not in the studies folder
    env: dict[str, str]  # environment of every process the tests start
    tmp: Path


@pytest.fixture(scope="package")
def monailabel_venv() -> Path:
    """The MONAI Label environment; its absence fails the tests (CI builds it: `make test`)."""
    if not (VENV / ".installed").is_file() or not (VENV / "bin" / "python").is_file():
        pytest.fail(
            f"the MONAI Label environment {VENV} is missing or unfinished: build it with `make setup-monailabel` "
            "(scripts/setup_monailabel.sh), or point LMNET_MONAILABEL_VENV at one.",
            pytrace=False,
        )
    return VENV


@pytest.fixture(scope="package")
def workspace(tmp_path_factory, monailabel_venv) -> Workspace:
    """A bundle copy with seeded weights for both tasks (digests recorded; LGG's an ensemble file of two networks, so
    that both apps serve and fine-tune an ensemble file), a studies folder with two labelled volumes and a labelled
    PNG, and a DICOM series."""
    tmp = tmp_path_factory.mktemp("monailabel")
    root = copy_bundle(tmp / "bundle")
    studies = tmp / "studies"
    images = write_studies(studies)
    series = write_mr_series(tmp / "dicom" / "series_1", rows=40, cols=48, slices=6)  # outside the studies
    dicom_nifti = tmp / "dicom" / "series_1.nii.gz"  # the same series, converted by ITK as MONAI Label does
    itk.imwrite(itk.imread(str(series.files[0].parent)), str(dicom_nifti))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        lgg_images = [images["vol_a"][..., 1], images["us_c"], series.pixels]
        write_weights(root, "models/model.pt", "lgg", lgg_images, seed=0, members=2)  # an ensemble file
        write_weights(root, "models/busi/model.pt", "busi", [images["us_c"]], seed=1)
        write_weights(root, "models/lgg3d/model.pt", "lgg3d", [images["vol_a"][..., 1]], seed=2, spatial_dims=3)
    finally:
        torch.set_num_threads(threads)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", LMNET_MONAILABEL_VENV=str(monailabel_venv))
    inputs = {"vol_a": studies / "vol_a.nii.gz", "vol_b": studies / "vol_b.nii.gz", "us_c": studies / "us_c.png",
              "series_1": dicom_nifti}
    return Workspace(root, studies, inputs, series.files[0].parent, env, tmp)


def _read(path: Path) -> np.ndarray:
    if path.suffix == ".png":
        return np.asarray(Image.open(path)) // 255  # the bundle writes 2D labels as 0 / 255
    return np.asarray(nib.load(path).dataobj)


@pytest.fixture(scope="package")
def references(workspace: Workspace) -> dict[tuple[str, str], tuple[np.ndarray, np.ndarray | None]]:
    """``{(task, image id): (label, affine)}`` from ``python -m monai.bundle run`` of the task's inference configs:
    lgg on every input (the DICOM series as its NIfTI conversion), busi on the PNG, lgg3d on one volume."""
    inputs = workspace.tmp / "reference_inputs"
    inputs.mkdir()
    for path in workspace.inputs.values():
        (inputs / path.name).symlink_to(path)
    out = {}
    runs = {"lgg": inputs, "busi": inputs / "us_c.png", "lgg3d": inputs / "vol_a.nii.gz"}
    for task, source in runs.items():
        output_dir = workspace.tmp / f"reference_{task}"
        run_bundle_inference(workspace.bundle_root, task, source, output_dir, workspace.env)
        for image_id in workspace.inputs:
            for suffix in (".png", ".nii.gz"):
                path = output_dir / f"{image_id}_seg{suffix}"
                if path.is_file():
                    out[(task, image_id)] = (_read(path), nib.load(path).affine if suffix != ".png" else None)
    return out


def start_server(workspace: Workspace, app: str, name: str, extra: tuple[str, ...] = ()) -> Server:
    """Start a server of ``app`` (lmnet or stock) on a free port for the workspace, with ``extra`` arguments of
    ``monailabel start_server``; waits until it answers."""
    server = Server(
        ["--app", app, "--studies", str(workspace.studies), "--bundle-root", str(workspace.bundle_root),
         *(("--", *extra) if extra else ())],
        port=free_tcp_port(), log=workspace.tmp / f"{name}.log", env=workspace.env,
    )
    try:
        server.wait_ready(timeout=240)
    except BaseException:
        server.stop()
        raise
    return server
