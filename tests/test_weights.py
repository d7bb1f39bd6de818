"""Shipped weights: digests recorded in the metadata and checked at load, strict loading, and the model card's
test-split numbers re-computed from the shipped weights through ``configs/inference.json`` (when the shared data
is present)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from bundle.checkpoints import (
    METADATA_KEY,
    load_weights,
    record_weights,
    recorded_digests,
    sha256_file,
    verify_weights,
)
from bundle.config import bundle_parser
from bundle.networks import LMNet
from bundle.segmenter import Segmenter
from bundle.tasks import TASKS
from tests.conftest import ROOT, SHARED_DATA


@pytest.fixture()
def bundle_copy(tmp_path) -> Path:
    """The configs of this bundle in a temporary root, with a random LMNet saved as ``models/model.pt``."""
    root = tmp_path / "bundle"
    shutil.copytree(ROOT / "configs", root / "configs")
    (root / "models").mkdir()
    torch.manual_seed(1)
    torch.save(LMNet(2, 1, 2).state_dict(), root / "models" / "model.pt")
    return root


def test_sha256_file_matches_hashlib_reference(tmp_path):
    path = tmp_path / "blob.bin"
    path.write_bytes(b"lm-net" * 100_000)
    # sha256 of b"abc", the FIPS 180-2 test vector, checks the chunked reader against a known answer
    (tmp_path / "abc").write_bytes(b"abc")
    assert sha256_file(tmp_path / "abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert sha256_file(path, chunk_bytes=4096) == hashlib.sha256(path.read_bytes()).hexdigest()


def test_recorded_weights_verify_and_tampering_is_refused(bundle_copy):
    digest = record_weights(bundle_copy, "models/model.pt")
    assert recorded_digests(bundle_copy)["models/model.pt"] == digest
    meta = json.loads((bundle_copy / "configs" / "metadata.json").read_text())
    assert meta[METADATA_KEY]["models/model.pt"] == digest and "version" in meta  # the rest of the metadata is kept
    weights = bundle_copy / "models" / "model.pt"
    assert verify_weights(weights, bundle_copy) == str(weights)
    with open(weights, "r+b") as handle:  # flip one byte
        handle.seek(100)
        byte = handle.read(1)
        handle.seek(100)
        handle.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(ValueError, match=r"model\.pt is corrupt or was replaced"):
        verify_weights(weights, bundle_copy)
    with pytest.raises(ValueError, match="corrupt"):
        Segmenter.from_bundle(bundle_copy, "lgg", device="cpu")
    with pytest.raises(ValueError, match="corrupt"):  # the bundle is found from the file's own location
        load_weights(LMNet(2, 1, 2), weights)


def test_unlisted_and_missing_weights(bundle_copy, tmp_path):
    other = tmp_path / "mine.pt"
    shutil.copy(bundle_copy / "models" / "model.pt", other)
    assert verify_weights(other, bundle_copy) == str(other)  # a user's own checkpoint: loads, digest logged
    with pytest.raises(FileNotFoundError, match="missing.pt does not exist"):
        verify_weights(tmp_path / "missing.pt", bundle_copy)


def test_inference_config_refuses_a_replaced_shipped_file(bundle_copy):
    """The check is wired into configs/inference.json: the CheckpointLoader's path goes through verify_weights."""
    record_weights(bundle_copy, "models/model.pt")
    torch.manual_seed(2)
    torch.save(LMNet(2, 1, 2).state_dict(), bundle_copy / "models" / "model.pt")  # swapped after recording
    parser = ConfigParser()
    parser.read_config(str(bundle_copy / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_copy)
    parser["dataset_dir"] = str(bundle_copy)
    parser.get_parsed_content("initialize")  # imports ``bundle`` as the workflows do
    with pytest.raises(Exception) as info:
        parser.get_parsed_content("handlers")
    chain, error = [], info.value
    while error is not None:
        chain.append(str(error))
        error = error.__cause__ or error.__context__
    assert any("corrupt or was replaced" in message for message in chain), chain


def _task_of(relative: str) -> str:
    return next(task.name for task in TASKS.values() if task.weights == relative)


def test_every_recorded_weights_file_is_shipped_and_matches():
    digests = recorded_digests(ROOT)
    for task in TASKS.values():
        if not task.shipped:  # trained by the user (e.g. lgg3d): nothing recorded for it
            assert task.weights not in digests, f"{task.weights} is recorded but task {task.name} ships no weights"
            continue
        assert (ROOT / task.weights).is_file(), f"{task.weights} of task {task.name} is not shipped"
        assert task.weights in digests, f"{task.weights} is shipped but its sha256 is not in configs/metadata.json"
    for relative, digest in digests.items():
        path = ROOT / relative
        assert path.is_file(), f"configs/metadata.json records {relative}, which is missing"
        assert sha256_file(path) == digest, f"{relative} does not match its recorded sha256"
        network = bundle_parser(ROOT, _task_of(relative), "inference").get_parsed_content("network_def")
        load_weights(network, path)  # strict: every key of the task's network, nothing else


@pytest.mark.parametrize("task", ["lgg", "busi"])
def test_card_numbers_reproduce_from_shipped_weights(task, tmp_path):
    """`python -m scripts.reproduce_results --check` re-runs configs/inference.json on the test split and compares
    every summary number with the card's record docs/results/<task>_test.json."""
    folder = SHARED_DATA / task
    if not folder.is_dir():
        pytest.skip(f"{folder} is not present")
    weights = ROOT / TASKS[task].weights
    assert weights.is_file(), f"{weights} is not shipped"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "scripts.reproduce_results", "--task", task, "--dataset-dir", str(folder),
         "--output", str(tmp_path / task), "--check"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "all numbers equal the card's record" in result.stderr


def test_model_card_lists_the_recorded_digests():
    """The card's weights table shows each shipped file with the digest the loader checks against."""
    card = (ROOT / "docs" / "README.md").read_text(encoding="utf-8")
    digests = recorded_digests(ROOT)
    assert digests, "no shipped weights recorded"
    for relative, digest in digests.items():
        rows = [line for line in card.splitlines() if line.startswith(f"| `{relative}` |")]
        assert len(rows) == 1, f"docs/README.md has no single weights-table row for {relative}"
        assert f"`{digest}`" in rows[0], f"docs/README.md shows another digest for {relative}"
