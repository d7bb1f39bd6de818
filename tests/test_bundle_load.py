"""``monai.bundle.load`` as MONAI users load bundles: from any working directory, in a fresh process that has not
put the bundle on ``sys.path``, it returns the shipped network (an ensemble of LM-Nets for an ensemble file) with the
shipped weights."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from tests.conftest import ROOT

_IGNORE = shutil.ignore_patterns(".git", ".venv*", "outputs", "runs", "__pycache__", ".pytest_cache", ".ruff_cache",
                                 "*.egg-info", "tests")

CHECK = """
import sys, torch, monai
net = monai.bundle.load(name="lmnet_bundle", bundle_dir=sys.argv[1], workflow_type=sys.argv[2])
shipped = torch.load(sys.argv[1] + "/lmnet_bundle/models/model.pt", weights_only=True)
state = net.state_dict()
expected = "ProbabilityEnsemble" if any(k.startswith("members.") for k in shipped) else "LMNet"
assert type(net).__name__ == expected, (type(net), expected)
assert set(state) == set(shipped), "the keys differ"
assert all(torch.equal(state[k].cpu(), v) for k, v in shipped.items()), "the weights differ"
assert "bundle" not in sys.modules or sys.modules["bundle"].__file__.startswith(sys.argv[1]), "another bundle"
print("LOADED", sys.argv[2])
"""


@pytest.mark.parametrize("workflow_type", ["train", "infer"])
def test_monai_bundle_load_from_another_directory(tmp_path, workflow_type):
    bundles = tmp_path / "bundles"
    shutil.copytree(ROOT, bundles / "lmnet_bundle", symlinks=True, ignore=_IGNORE)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    result = subprocess.run([sys.executable, "-c", CHECK, str(bundles), workflow_type], cwd=elsewhere,
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert f"LOADED {workflow_type}" in result.stdout
