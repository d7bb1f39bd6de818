"""Helpers of the MONAI Label tests: a bundle copy with weights of its own, a studies folder, a server process and
the HTTP calls (urllib only: the main environment has no MONAI Label and needs none)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from PIL import Image

from bundle.checkpoints import record_weights
from bundle.config import bundle_run_command
from bundle.data.synthetic import make_synthetic_image, make_synthetic_volume
from bundle.networks import LMNet
from bundle.networks.ensemble import ensemble_state_dict
from tests.helpers import config_segmenter, lesion_logit, randomize_batchnorm

ROOT = Path(__file__).resolve().parents[2]
VOLUME_AFFINE = np.array([[0.9, 0, 0, -100.0], [0, 0.9, 0, -110.0], [0, 0, 3.0, -20.0], [0, 0, 0, 1]])

_COPY_IGNORE = shutil.ignore_patterns(
    ".git", ".venv*", "outputs", "runs", "models", "tests", "__pycache__", ".pytest_cache", ".ruff_cache",
    "*.egg-info", "model", "logs", "bin", "lib",  # the last four: folders a MONAI Label server adds to its app
)


def copy_bundle(dest: Path) -> Path:
    """Copy the bundle (configs, library, app, metadata link, licence) to ``dest``, without weights or outputs."""
    shutil.copytree(ROOT, dest, symlinks=True, ignore=_COPY_IGNORE)
    (dest / "models").mkdir()
    return dest


def write_weights(bundle_root: Path, relative: str, task: str, images: list[np.ndarray], seed: int,
                  spatial_dims: int = 2, members: int = 1) -> Path:
    """Save seeded random LMNet weights (``spatial_dims`` 2 or 3) as ``<bundle_root>/<relative>`` and record their
    digest; with ``members`` above 1, an ensemble file of that many such networks (seeds ``seed``, ``seed + 100``,
    ...), the kind of file scripts/build_ensemble.py writes. ``images``: (H, W) images or (H, W, D) volumes, as the
    task's segmenter takes them.

    Random weights alone give an almost constant output; each network's head is scaled and shifted so that on
    ``images`` the two classes split the pixels about evenly and depend on the input. A prediction that matches the
    bundle's own voxel for voxel then proves that these weights, not a fresh initialisation, were loaded.
    """
    states = [_calibrated(task, images, seed + 100 * i, spatial_dims).state_dict() for i in range(members)]
    path = bundle_root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(states[0] if members == 1 else ensemble_state_dict(states), path)
    record_weights(bundle_root, relative)
    return path


def _calibrated(task: str, images: list[np.ndarray], seed: int, spatial_dims: int) -> LMNet:
    torch.manual_seed(seed)
    net = randomize_batchnorm(LMNet(spatial_dims=spatial_dims, in_channels=1, out_channels=2), seed).eval()
    segmenter = config_segmenter(net, task)
    margins = []
    for image in images:
        _, probs = segmenter(image)
        margins.append((np.log(probs[1]) - np.log(probs[0])).ravel())
    margin = np.concatenate(margins)
    scale = 4.0 / float(margin.std())
    with torch.no_grad():
        net.head.weight.mul_(scale)
        net.head.bias.mul_(scale)
        net.head.bias[1] += lesion_logit(task) - scale * float(np.median(margin))
    return net


def write_studies(studies: Path) -> dict[str, np.ndarray]:
    """A MONAI Label studies folder: two labelled FLAIR-like volumes (64 x 64 x 6 x 3, NIfTI) and one labelled
    ultrasound-like PNG (64 rows x 80 columns, not square so that a transposed label shows). Returns the images."""
    final = studies / "labels" / "final"
    final.mkdir(parents=True)
    images = {}
    for name, seed in (("vol_a", 3), ("vol_b", 4)):
        image, label = make_synthetic_volume((64, 64, 6), seed)
        nib.save(nib.Nifti1Image(image, VOLUME_AFFINE), studies / f"{name}.nii.gz")
        nib.save(nib.Nifti1Image(label, VOLUME_AFFINE), final / f"{name}.nii.gz")
        images[name] = image
    image, mask = make_synthetic_image((64, 80), 5)
    Image.fromarray(image).save(studies / "us_c.png")
    Image.fromarray((mask > 0).astype(np.uint8)).save(final / "us_c.png")
    images["us_c"] = image
    return images


class Server:
    """A MONAI Label server started by ``scripts/start_monailabel.sh`` in its own process group, logging to
    ``log``; :meth:`stop` ends that group."""

    def __init__(self, args: list[str], port: int, log: Path, env: dict[str, str]) -> None:
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._log_handle = open(log, "wb")  # noqa: SIM115 (closed in stop())
        self.process = subprocess.Popen(
            ["bash", str(ROOT / "scripts" / "start_monailabel.sh"), "--port", str(port), *args],
            stdout=self._log_handle, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )

    def log_tail(self, lines: int = 60) -> str:
        text = self.log.read_text(errors="replace") if self.log.is_file() else ""
        return "\n".join(text.splitlines()[-lines:])

    def wait_ready(self, timeout: float) -> None:
        """Wait until ``GET /info/`` answers; raise with the log tail if the server exits or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"MONAI Label server exited ({self.process.returncode}):\n{self.log_tail()}")
            try:
                get_json(self.url + "/info/", timeout=5)
                return
            except (OSError, urllib.error.URLError):
                time.sleep(1.0)
        raise TimeoutError(f"MONAI Label server not ready after {timeout:.0f} s:\n{self.log_tail()}")

    def get_json(self, path: str) -> dict:
        """``GET`` a JSON answer; a failure raises with the server's log tail."""
        try:
            return get_json(self.url + path)
        except (OSError, ValueError) as err:
            raise RuntimeError(f"GET {path} failed: {err}\n--- server log ---\n{self.log_tail()}") from err

    def post(self, path: str, **kwargs) -> bytes:
        """``POST`` (arguments of :func:`post`); a failure raises with the server's log tail."""
        try:
            return post(self.url + path, **kwargs)
        except (OSError, RuntimeError) as err:
            raise RuntimeError(f"POST {path} failed: {err}\n--- server log ---\n{self.log_tail()}") from err

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        self._log_handle.close()


def get_json(url: str, timeout: float = 60) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


def post(url: str, fields: dict[str, str] | None = None, files: dict[str, Path] | None = None,
         body_json: dict | None = None, timeout: float = 600) -> bytes:
    """POST to ``url``: multipart form ``fields`` and ``files``, or a JSON body. Returns the response body; an HTTP
    error raises ``RuntimeError`` with the server's answer."""
    headers = {}
    data = b""
    if body_json is not None:
        data, headers["Content-Type"] = json.dumps(body_json).encode(), "application/json"
    elif fields or files:
        boundary = uuid.uuid4().hex
        parts = []
        for name, value in (fields or {}).items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
        for name, path in (files or {}).items():
            head = (f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{path.name}"\r\n'
                    "Content-Type: application/octet-stream\r\n\r\n")
            parts.append(head.encode() + path.read_bytes() + b"\r\n")
        data = b"".join(parts) + f"--{boundary}--\r\n".encode()
        headers["Content-Type"] = f"multipart/form-data; boundary={boundary}"
    request = urllib.request.Request(url, data=data, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read()
    except urllib.error.HTTPError as err:
        raise RuntimeError(f"POST {url} answered {err.code}: {err.read()[:2000]!r}") from err


def read_label(data: bytes, suffix: str, dest: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """Save a label file returned by the server as ``dest`` (``suffix`` .png or .nii.gz) and read it:
    ``(array, affine)`` (affine ``None`` for a PNG)."""
    dest.write_bytes(data)
    if suffix == ".png":
        return np.asarray(Image.open(dest)), None
    img = nib.load(dest)
    return np.asarray(img.dataobj), img.affine


def run_bundle_inference(
    bundle_root: Path, task: str, inputs: Path, output_dir: Path, env: dict, extra_args: Sequence[str] = ()
) -> None:
    """``python -m monai.bundle run`` of the task's inference configs of the bundle (main environment) on ``inputs``,
    with ``extra_args`` (e.g. ``["--ckpt_path", path]``) appended."""
    cmd = [*bundle_run_command(bundle_root, task, "inference", {"dataset_dir": str(inputs),
                                                                "output_dir": str(output_dir), "num_workers": 0}),
           *extra_args]
    result = subprocess.run(cmd, cwd=bundle_root, env=env, capture_output=True, text=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"bundle inference failed ({result.returncode}):\n{result.stdout[-3000:]}\n"
                           f"{result.stderr[-3000:]}")


def assert_same_label(label: np.ndarray, expected: np.ndarray, what: str, server: Server) -> None:
    """The server's ``label`` equals the bundle's ``expected`` one up to one voxel in 10,000 (at least one): the server
    runs MONAI Label's torch build (bundle/monailabel/requirements.txt), whose kernels round differently from the main
    environment's, so a voxel whose lesion probability lies within rounding of the threshold may flip; weights or
    settings other than the bundle's change a large share of the voxels. A failure quotes the server's log."""
    assert label.shape == expected.shape, f"{what}: label shape {label.shape}, bundle {expected.shape}"
    differ, allowed = int((label != expected).sum()), max(1, label.size // 10000)
    assert differ <= allowed, (f"{what}: {differ} of {label.size} voxels differ from the bundle's (at most {allowed})"
                               f"\n{server.log_tail(30)}")
