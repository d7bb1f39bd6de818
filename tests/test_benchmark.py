"""The measuring helpers of bundle.benchmark run what they say (no timing is asserted: speed is measured by
scripts/model_stats.py, never by tests)."""

from __future__ import annotations

import math
import re
import subprocess
from functools import partial
from pathlib import Path

import pytest
import torch.nn as nn

from bundle.benchmark import in_fresh_process, measure_peak_memory, measure_training_step, profile_forward
from tests.conftest import ROOT


def test_training_step_trains_in_a_fresh_process():
    seconds, peak_mib = measure_training_step(partial(nn.Conv3d, 1, 2, 3, padding=1), (2, 1, 8, 8, 8), threads=1)
    assert math.isfinite(seconds) and seconds > 0
    assert math.isfinite(peak_mib) and peak_mib >= 0


def test_training_step_reports_a_network_that_cannot_run_its_input():
    # a 2D convolution cannot take a 5D batch: the worker's error must surface, not hang or return a number
    with pytest.raises(RuntimeError, match="failed"):
        measure_training_step(partial(nn.Conv2d, 1, 2, 3, padding=1), (1, 1, 8, 8, 8), threads=1)


def _start_a_process() -> str:
    """What happens when a measure starts a process of its own (as OpenVINO's telemetry does)."""
    import multiprocessing

    try:
        multiprocessing.get_context("spawn").Process(target=int).start()
    except AssertionError as err:
        return f"refused: {err}"
    return "started"


def test_fresh_process_cannot_start_processes_of_its_own():
    # a library's helper processes (OpenVINO's telemetry) must not run beside the timed forward
    assert in_fresh_process(_start_a_process, 1).startswith("refused: daemonic processes")


def test_profile_names_every_child_module_with_a_share_of_the_pass():
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.GELU(), nn.Conv2d(4, 2, 1))
    operators, modules = profile_forward(model, (1, 1, 32, 32), threads=1, repeats=3)
    assert any("convolution" in name for name, _, _ in operators)
    assert all(0 < share <= 1 and calls >= 1 for _, share, calls in operators)
    assert sorted(name for name, _ in modules) == ["0", "1", "2"]
    # shares of one pass (medians over the passes): not a multiple of it
    assert all(share > 0 for _, share in modules) and sum(share for _, share in modules) < 1.5


def test_openvino_profile_splits_the_forward_by_node_type_and_by_module(capsys):
    """`model_stats --profile --openvino` (small input): node types and LM-Net's modules, each table summing to the
    whole node time (up to the printed rounding)."""
    pytest.importorskip("openvino")
    from scripts.model_stats import main

    assert main(["--profile", "--openvino", "bf16", "--size", "32", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    assert "(CPU plugin, bf16; per-node times from PERF_COUNT)" in out
    sums = re.search(r"node times sum to ([0-9.]+) ms per forward, a forward without the counters takes ([0-9.]+) ms",
                     out)
    assert sums and float(sums.group(1)) > 0 and float(sums.group(2)) > 0
    types_part, modules_part = out.split("| module |")
    types = {c[0]: float(c[1]) for c in _table_cells(types_part)}
    modules = {c[0]: float(c[1]) for c in _table_cells(modules_part)}
    # the top node types: at most the whole, up to each printed share's rounding (0.05 each)
    assert "Convolution" in types and all(share > 0 for share in types.values())
    assert sum(types.values()) <= 100 + 0.05 * len(types)
    assert {"enc1", "lft1", "gft", "head"} <= set(modules) and abs(sum(modules.values()) - 100) <= 0.05 * len(modules)


def _table_cells(text: str) -> list[list[str]]:
    """The cells of a printed markdown table's body rows."""
    return [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
            if line.startswith("| ") and "---" not in line and "share of node time" not in line]


def _lmnet_origin_at(root: str) -> tuple[str, tuple[int, ...]]:
    """In a fresh process: where `--baseline-rev`'s builder takes LM-Net from, and its output shape."""
    import sys

    import torch

    from scripts.model_stats import _lmnet_path_at

    model = _lmnet_path_at(root, "eager-plain", "fp32", 1, 1)
    with torch.no_grad():
        shape = tuple(model(torch.zeros(1, 1, 32, 32)).shape)
    return sys.modules[type(model).__module__].__file__, shape


def test_baseline_paths_build_lmnet_from_the_other_checkout():
    """`model_stats --paired --baseline-rev`: the measuring process builds LM-Net with the checkout's code."""
    from bundle.benchmark import revision_checkout

    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("the checkout is not a git repository")
    with revision_checkout(ROOT, "HEAD") as tree:
        origin, shape = in_fresh_process(_lmnet_origin_at, 1, str(tree))
        assert Path(origin).resolve().is_relative_to(tree.resolve()) and shape == (1, 2, 32, 32)


def test_peak_memory_reports_a_failed_forward_instead_of_waiting():
    with pytest.raises(RuntimeError, match=r"peak memory on input \(1, 1, 8, 8, 8\) failed"):
        measure_peak_memory(partial(nn.Conv2d, 1, 2, 3, padding=1), (1, 1, 8, 8, 8), threads=1)
    assert measure_peak_memory(partial(nn.Conv2d, 1, 2, 3, padding=1), (1, 1, 64, 64), threads=1) >= 0


def test_runtime_table_ranks_lmnet_paths_and_reports_its_ratios(capsys):
    """`model_stats --runtimes` (small input, LM-Net only): a row per runtime x precision, and the re-timed best-path
    table whose LM-Net row compares LM-Net with itself (every ratio that uses its own best path is 1)."""
    pytest.importorskip("openvino")
    from scripts.model_stats import main

    assert main(["--runtimes", "--quick", "--lmnet-only", "--size", "64"]) == 0
    lines = capsys.readouterr().out.splitlines()
    sweep = [line for line in lines if line.startswith("| LM-Net deployed | ") and line.count("|") == 5]
    assert [tuple(line.split(" | ")[1:3]) for line in sweep] == [
        ("eager-plain", "fp32"), ("eager", "fp32"), ("eager", "bf16"), ("openvino", "fp32"), ("openvino", "bf16")]
    best = [line for line in lines if line.startswith("| LM-Net deployed | ") and line.count("|") == 9]
    assert len(best) == 1
    cells = [cell.strip() for cell in best[0].strip("|").split("|")]
    assert cells[1] in {f"{r} {p}" for r in ("eager", "openvino") for p in ("fp32", "bf16")}
    assert cells[4] == "1.00"  # LM-Net best / this best
    assert float(cells[2]) <= float(cells[3])  # the best path is no slower than eager fp32 in the re-timing
    before_after = [line for line in lines if line.startswith("# LM-Net eager fp32 (oneDNN")]
    assert len(before_after) == 1 and float(before_after[0].rsplit(" ", 1)[1]) > 0


def test_paired_table_gives_every_lmnet_path_a_ratio_to_unet(capsys):
    """`model_stats --paired` (small input, 2 rounds): one row per LM-Net path; each ratio is taken per round against
    that round's UNet time, so the ratio of the two columns' medians (with 2 rounds: a weighted mean of the per-round
    ratios) lies inside the printed ratio range, up to the table's rounding."""
    pytest.importorskip("openvino")
    from bundle.openvino_kernels import kernel_library
    from scripts.model_stats import main

    assert main(["--paired", "2", "--size", "32", "--repeats", "1"]) == 0
    out = capsys.readouterr().out
    # the header says how OpenVINO ran the attention: the compiled operation or OpenVINO's own operations
    assert ("as one compiled operation" if kernel_library() is not None else "as its own operations") in out
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| LM-Net path") and "---" not in line]
    assert [row[0] for row in rows] == ["eager-plain fp32", "(MONAI UNet (64..1024, 2 res units), eager-packed fp32)",
                                        "eager fp32", "eager bf16", "openvino fp32", "openvino bf16"]
    for name, ms, unet_ms, _, ratio_range in rows:
        low, high = (float(v) for v in ratio_range.split("-"))
        ms, unet_ms = float(ms), float(unet_ms)
        assert ms > 0 and unet_ms > 0, name
        assert (ms + 0.05) / (unet_ms - 0.05) >= low - 0.005 and (ms - 0.05) / (unet_ms + 0.05) <= high + 0.005, name


def test_revision_checkout_is_a_temporary_tree_of_that_revision():
    from bundle.benchmark import revision_checkout

    if subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True).returncode != 0:
        pytest.skip("the checkout is not a git repository")
    with revision_checkout(ROOT, "HEAD") as tree:
        committed = subprocess.run(["git", "-C", str(ROOT), "show", "HEAD:bundle/__init__.py"], capture_output=True,
                                   text=True, check=True).stdout
        assert (tree / "bundle" / "__init__.py").read_text() == committed
    assert not tree.exists()
    assert str(tree) not in subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True,
                                           text=True).stdout
    with pytest.raises(subprocess.CalledProcessError):
        with revision_checkout(ROOT, "no-such-revision-0123"):
            pass


def test_inference_compile_computes_the_eager_output():
    """`compile_for_inference` (model_stats' torch.compile rows): a small conv net with batch norm and GELU compiled
    with frozen weights and the C++ wrapper gives the eager output, for a second input too."""
    import shutil

    import torch

    from bundle.benchmark import compile_for_inference

    if not (shutil.which("c++") or shutil.which("g++")):
        pytest.skip("Inductor's CPU backend needs a C++ compiler")
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 8, 3, padding=1), nn.BatchNorm2d(8), nn.GELU(), nn.Conv2d(8, 2, 1)).eval()
    x = torch.randn(1, 2, 16, 16)
    with torch.inference_mode():
        expected = net(x)
        compiled = compile_for_inference(net)
        torch.testing.assert_close(compiled(x), expected, rtol=1e-4, atol=1e-5)
        y = torch.randn(1, 2, 16, 16)
        torch.testing.assert_close(compiled(y), net(y), rtol=1e-4, atol=1e-5)


def test_paired_latency_times_each_network_in_its_own_process_every_round():
    from bundle.benchmark import paired_latency

    times = paired_latency({"small": partial(nn.Conv2d, 1, 2, 3), "wide": partial(nn.Conv2d, 1, 8, 3)},
                           (1, 1, 16, 16), rounds=3, threads=1, repeats=1, settle_s=0.0)
    assert list(times) == ["small", "wide"]
    assert all(len(v) == 3 and all(ms > 0 and math.isfinite(ms) for ms in v) for v in times.values())


def test_paired_latency_names_the_network_that_cannot_run():
    from bundle.benchmark import paired_latency

    with pytest.raises(RuntimeError, match="measuring three-channel failed: RuntimeError"):
        paired_latency({"one-channel": partial(nn.Conv2d, 1, 2, 3), "three-channel": partial(nn.Conv2d, 3, 2, 3)},
                       (1, 1, 16, 16), rounds=1, threads=1, repeats=1)
