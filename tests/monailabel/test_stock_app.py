"""The repository root as it is, in MONAI Label 0.8.5's stock ``monaibundle`` app (bundle in its model folder).

The stock app lists the bundle with its labels and segments volumes. It loads weights with ``strict=False`` and runs
the network in its training form (no re-parameterization), so its labels equal the bundle's up to rounding at the
class boundary; agreement near 100 % with input-dependent random weights shows the weights did load. (2D PNG
results fail in the stock app's ITK writer; the bundle's own app serves those.)
"""

from __future__ import annotations

import pytest

from .conftest import Workspace, start_server
from .helpers import read_label


@pytest.fixture(scope="module")
def stock_server(workspace: Workspace):
    server = start_server(workspace, "stock", "stock_server")
    yield server
    server.stop()


def test_stock_app_lists_bundle_with_labels(stock_server):
    info = stock_server.get_json("/info/")
    assert "lmnet" in info["models"], f"models: {list(info['models'])}\n{stock_server.log_tail()}"
    model = info["models"]["lmnet"]
    assert model["labels"] == {"lesion": 1}
    assert model["dimension"] == 2
    assert "lmnet" in info["trainers"]


def test_stock_app_segments_volume_with_bundle_weights(stock_server, references, tmp_path):
    data = stock_server.post("/infer/lmnet?image=vol_a&output=image")
    label, _ = read_label(data, ".nii.gz", tmp_path / "label.nii.gz")
    expected, _ = references[("lgg", "vol_a")]
    assert label.shape == expected.shape
    agreement = float((label == expected).mean())
    assert agreement > 0.99, f"stock app agrees with the bundle on {agreement:.2%} of voxels only"
