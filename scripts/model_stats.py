"""Print LM-Net's parameters, MACs, CPU latency and peak memory beside the paper and MONAI's own networks.

Usage (from the repository root):
    python -m scripts.model_stats                 # the full table in docs/architecture.md (several minutes)
    python -m scripts.model_stats --quick         # batch 1, 2 threads, fewer runs (about a minute)
    python -m scripts.model_stats --compile       # adds torch.compile rows (LM-Net deployed, MONAI UNet)
    python -m scripts.model_stats --profile       # where the deployed forward's time goes (operators, modules)
    python -m scripts.model_stats --profile --plain   # the same for the plain eager modules (before oneDNN)
    python -m scripts.model_stats --profile --openvino bf16   # the same as OpenVINO runs it (node types, modules)
    python -m scripts.model_stats --ablations     # parameters and MACs of the paper's ablation switches
    python -m scripts.model_stats --volumes       # 3D: LM-Net 3D beside MONAI's 3D UNet, SegResNet, SwinUNETR
    python -m scripts.model_stats --runtimes      # every network x runtime (eager, torch.compile, OpenVINO) x
                                                  # precision (fp32, bf16), b1/b8, 1/2 threads; seconds per volume
    python -m scripts.model_stats --runtimes --no-compile   # the same without torch.compile (about 11 minutes)
    python -m scripts.model_stats --case-seconds  # only seconds per 256 x 256 x 40 volume through the predictor
    python -m scripts.model_stats --case-seconds --weights <file>   # the same for other weights (an ensemble)
    python -m scripts.model_stats --paired 20     # only LM-Net's paths against MONAI UNet eager fp32, timed back to
                                                  # back in 20 rounds (b1, 2 threads): the median per-round ratio
    python -m scripts.model_stats --paired 20 --compile   # the same plus LM-Net under torch.compile (fp32)
    python -m scripts.model_stats --paired 6 --batch 8    # the paired rounds at batch 8
    python -m scripts.model_stats --paired 20 --baseline-rev <rev>   # every LM-Net path also at another revision

torch.compile rows use ``bundle.benchmark.compile_for_inference`` (Inductor with frozen weights and a C++ wrapper).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import platform
import statistics
from functools import partial
from pathlib import Path

import torch

from bundle.allocator import reuse_freed_memory
from bundle.benchmark import (
    MAC_COUNTER,
    REFERENCE_NETWORKS,
    compile_for_inference,
    count_macs,
    count_parameters,
    in_fresh_process,
    measure_latency,
    measure_peak_memory,
    measure_training_step,
    module_time_share,
    openvino_profile,
    paired_latency,
    profile_forward,
    reference_models,
    revision_checkout,
)
from bundle.networks import LMNet, reparameterize_model, to_channels_last
from bundle.networks.blocks import NeighborhoodAttention
from bundle.networks.onednn import pack_for_cpu
from bundle.runtimes import runtime_network

PUBLISHED = [  # (source, params M, MACs G) at 256 x 256, as reported
    ("paper, Table 7: training form", 5.45, 5.15),
    ("paper, Table 7: re-parameterized", 5.40, 4.66),
    ("authors' public code (f=12..192, k=3): training", 3.97, 5.47),
    ("authors' public code (f=12..192, k=3): deployed", 3.93, 5.11),
]


def _row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


ABLATIONS = [  # (paper table, constructor arguments)
    ("paper's LM-Net", {}),
    ("table 6: 3x3 branch only", {"branch_kernels": [[3, 3]]}),
    ("table 6: 5x5 branch only", {"branch_kernels": [[5, 5]]}),
    ("table 6: 5x5 + 3x3 branches", {"branch_kernels": [[5, 5], [3, 3]]}),
    ("table 8: GFT on the last encoder feature", {"gft_input": "last"}),
    ("table 8: no GFT", {"gft_input": "none"}),
    ("tables 9-10: local pyramids without LFT", {"skips": "pyramid"}),
    ("tables 9-10: plain U-Net skips", {"skips": "plain"}),
]


def _print_ablations(args: argparse.Namespace) -> int:
    shape = (1, args.in_channels, args.size, args.size)
    print(f"# {args.size} x {args.size}, {args.in_channels} input channel(s); MACs: {MAC_COUNTER}")
    print(_row(["variant", "arguments", "params (M) training", "params (M) deployed", "MACs (G) deployed"]))
    print(_row(["---"] * 5))
    for name, kwargs in ABLATIONS:
        net = LMNet(in_channels=args.in_channels, **kwargs)
        deployed = reparameterize_model(net)
        print(_row([name, str(kwargs) or "{}", f"{count_parameters(net) / 1e6:.2f}",
                    f"{count_parameters(deployed) / 1e6:.2f}", f"{count_macs(deployed, shape) / 1e9:.2f}"]))
    return 0


def _allocator_note(args: argparse.Namespace) -> str:
    """How the measuring processes allocate memory, for a table's header."""
    if args.default_allocator:
        return "glibc's default allocator settings"
    return "freed memory reused in every process (bundle.allocator, as the bundle's configs run)"


def _attention_note() -> str:
    """How OpenVINO runs LM-Net's neighborhood attention in this code (the compiled operation of
    ``bundle.openvino_kernels`` or OpenVINO's own operations), for a table's header."""
    try:
        import openvino  # noqa: F401

        from bundle.openvino_kernels import kernel_library
    except ImportError:
        return "openvino not installed"
    if kernel_library() is None:
        return "OpenVINO runs LM-Net's attention as its own operations (no compiled operation: see the log)"
    return "OpenVINO runs LM-Net's attention as one compiled operation (bundle/openvino_kernels)"


def _print_profile_tables(header: str, parts: list[tuple[str, float, int]], parts_head: list[str],
                          modules: list[tuple[str, float]], modules_head: list[str]) -> None:
    """A profile as ``--profile`` prints it: the header line, then two markdown tables: the parts (operators or node
    types: name, share in %, count per forward) and the modules (name, share in %)."""
    print(header)
    tables = [(parts_head, [[name, f"{100 * share:.1f}", str(count)] for name, share, count in parts]),
              (modules_head, [[name, f"{100 * share:.1f}"] for name, share in modules])]
    for i, (head, rows) in enumerate(tables):
        if i:
            print()
        print(_row(head))
        print(_row(["---"] * len(head)))
        for row in rows:
            print(_row(row))


def _print_profile(args: argparse.Namespace) -> int:
    """Operators and modules of LM-Net's deployed forward as the torch fp32 runtime runs it on the CPU (oneDNN
    kernels with pre-packed weights, ``bundle.networks.onednn``), or with ``--plain`` of the deployed network's own
    modules (the form before that), or with ``--openvino fp32|bf16`` node types and modules as OpenVINO's CPU plugin
    runs it."""
    reuse_freed_memory(not args.default_allocator)
    model = to_channels_last(reparameterize_model(LMNet(in_channels=args.in_channels)))
    shape = (1, args.in_channels, args.size, args.size)
    if args.openvino:
        import openvino

        node_types, modules, (node_ms, wall_ms) = openvino_profile(model, shape, args.openvino, threads=2,
                                                                   repeats=args.repeats)
        _print_profile_tables(
            f"# LM-Net deployed forward on OpenVINO {openvino.__version__.split('-')[0]} (CPU plugin, {args.openvino}; "
            f"per-node times from PERF_COUNT), {args.size} x {args.size}, batch 1, 2 threads, {args.repeats} "
            f"inferences; node times sum to {node_ms:.1f} ms per forward, a forward without the counters takes "
            f"{wall_ms:.1f} ms (median)", node_types, ["node type", "share of node time (%)", "nodes per forward"],
            modules, ["module", "share of node time (%)"])
        return 0
    form = "the deployed network's own modules (plain eager)"
    if not args.plain:
        model = runtime_network(model, "torch", "fp32")
        form = "as the torch fp32 runtime runs it (oneDNN, pre-packed weights, fused activations)"
    operators, modules = profile_forward(model, shape, threads=2, repeats=args.repeats)
    _print_profile_tables(
        f"# LM-Net deployed forward, {form}, {args.size} x {args.size}, batch 1, 2 threads, {args.repeats} passes; "
        f"torch {torch.__version__}; {_allocator_note(args)}", operators,
        ["operator", "share of CPU time (%)", "calls per forward"], modules, ["module", "share of forward time (%)"])
    return 0


BUNDLE_ROOT = Path(__file__).resolve().parents[1]
RUNTIME_NETWORKS = ("LM-Net deployed", "MONAI UNet (64..1024, 2 res units)", "MONAI BasicUNet (32..256)",
                    "MONAI SwinUNETR 2D (feature 24)")


def _runner(model: torch.nn.Module, runtime: str, precision: str, threads: int) -> torch.nn.Module:
    """``model`` as the inference config's runtime / precision run it, compiled for "torch.compile"; "eager-plain"
    is the network's own modules in fp32 (for LM-Net: the form before the oneDNN kernels the torch runtime uses),
    "eager-packed" a MONAI network with the same pre-packed oneDNN convolutions (``pack_for_cpu``)."""
    if runtime in ("eager-plain", "eager-packed"):
        if precision != "fp32":
            raise ValueError(f"{runtime} is an fp32 path.")
        return model if runtime == "eager-plain" else pack_for_cpu(model)
    if runtime == "torch.compile":  # Inductor packs and fuses itself: it compiles the network's own modules
        return compile_for_inference(model if precision == "fp32" else runtime_network(model, "torch", precision))
    return runtime_network(model, "openvino" if runtime == "openvino" else "torch", precision, threads=threads)


def _network(name: str, in_channels: int) -> torch.nn.Module:
    """The network of a runtime-table row, in eval mode: LM-Net deployed (weights of seed 0) or a MONAI reference."""
    torch.manual_seed(0)
    if name == "LM-Net deployed":
        return _deployed_lmnet(in_channels=in_channels).eval()
    return reference_models(in_channels, 2)[name]().eval()


def _network_path(name: str, runtime: str, precision: str, in_channels: int, threads: int) -> torch.nn.Module:
    """A picklable builder for ``paired_latency``'s processes: network ``name`` as ``runtime`` / ``precision``
    run it."""
    return _runner(_network(name, in_channels), runtime, precision, threads)


def _lmnet_path_at(root: str, runtime: str, precision: str, in_channels: int, threads: int) -> torch.nn.Module:
    """A picklable builder for ``paired_latency``'s processes (``--baseline-rev``): LM-Net deployed as ``runtime`` /
    ``precision`` run it with the code of the checkout ``root``, whose ``bundle`` package replaces this one in the
    (measuring) process. Weights of seed 0, as :func:`_network`."""
    import importlib
    import sys

    for name in [name for name in sys.modules if name == "bundle" or name.startswith("bundle.")]:
        del sys.modules[name]  # the measuring loop keeps its own references; the network comes from ``root``
    sys.path.insert(0, root)
    networks = importlib.import_module("bundle.networks")
    runtimes = importlib.import_module("bundle.runtimes")
    if not Path(networks.__file__).resolve().is_relative_to(Path(root).resolve()):
        raise RuntimeError(f"bundle was imported from {networks.__file__}, not from {root}")
    torch.manual_seed(0)
    model = networks.to_channels_last(networks.reparameterize_model(networks.LMNet(in_channels=in_channels))).eval()
    if runtime == "eager-plain":
        return model
    return runtimes.runtime_network(model, "openvino" if runtime == "openvino" else "torch", precision,
                                    threads=threads)


def _sweep_cells(name: str, runtime: str, precision: str, in_channels: int, size: int,
                 settings: list[tuple[int, int]], repeats: int) -> list[str]:
    """One row of the runtime table, measured in this (fresh) process: ms per (batch, threads) setting, or "fails"
    where the runtime cannot run the network."""
    model = _network(name, in_channels)
    runners: dict[int | None, torch.nn.Module] = {}  # one per thread count for OpenVINO (fixed at compile), else one
    cells = []
    for batch, threads in settings:
        try:
            key = threads if runtime == "openvino" else None
            if key not in runners:
                runners[key] = _runner(model, runtime, precision, threads)
            ms = measure_latency(runners[key], (batch, in_channels, size, size), threads, repeats, warmup=2)
        except Exception as err:  # noqa: BLE001 - a runtime that cannot run a network is a table cell
            logging.getLogger(__name__).warning("%s %s %s: %s", name, runtime, precision, err)
            cells.append("fails")
            continue
        cells.append(f"{ms:.1f}")
    return cells


def _print_runtimes(args: argparse.Namespace) -> int:
    """One table: every network in every runtime and precision; then every path at b1 t2 re-timed in turn, the best
    path of each network and LM-Net's ratios; and seconds per 256 x 256 x 40 volume through the predictor. Every
    row is measured in its own fresh process, and the re-timing gives every path its own process (one runtime's
    worker threads never run beside another's forward)."""
    settings = [(1, 2)] if args.quick else [(1, 1), (1, 2), (8, 1), (8, 2)]
    ranked = settings[min(1, len(settings) - 1)]  # (batch, threads) the best paths are compared at
    runtimes = ["eager", "openvino"] if args.quick or args.no_compile else ["eager", "torch.compile", "openvino"]
    repeats = 3 if args.quick else args.repeats
    names = [RUNTIME_NETWORKS[0]] if args.lmnet_only else list(RUNTIME_NETWORKS)
    print(f"# {args.size} x {args.size}, torch {torch.__version__}, {platform.processor() or platform.machine()}; "
          f"median ms of {repeats} forwards after warm-up; each row in its own process; {_allocator_note(args)}; "
          f"{_attention_note()}; one run, so compare ratios")
    header = ["network", "runtime", "precision", *[f"ms b{b} t{t}" for b, t in settings]]
    print(_row(header))
    print(_row(["---"] * len(header)))
    ranked_paths: dict[str, list[str]] = {name: [] for name in names}  # network -> paths that ran at `ranked`
    for name in names:
        # LM-Net's plain eager row: its deployed modules before the oneDNN kernels (the "before" of issue 16)
        paths = [("eager-plain", "fp32")] if name == RUNTIME_NETWORKS[0] else []
        paths += [(runtime, precision) for runtime in runtimes for precision in ("fp32", "bf16")]
        for runtime, precision in paths:
            cells = in_fresh_process(_sweep_cells, 2, name, runtime, precision, args.in_channels, args.size,
                                     settings, repeats, label=f"{name} {runtime} {precision}",
                                     reuse_memory=not args.default_allocator)
            if cells[settings.index(ranked)] != "fails":
                ranked_paths[name].append(f"{runtime} {precision}")
            print(_row([name, runtime, precision, *cells]), flush=True)
    _print_best_paths(args, ranked_paths, ranked, repeats)
    if not args.lmnet_only:
        _print_volume_seconds(args)
    return 0


def _print_best_paths(args: argparse.Namespace, paths: dict[str, list[str]], ranked: tuple[int, int],
                      repeats: int) -> None:
    """Every path of every network (network -> "runtime precision" labels) at the ``ranked`` setting timed again,
    each in its own process, one after another in each of ``rounds`` rounds (``bundle.benchmark.paired_latency``),
    so that the machine's drift during the sweep does not pick the best paths; the best path and the ratios use the
    median of each path's rounds."""
    lm_name = "LM-Net deployed"
    rounds = 1 if args.quick else 5
    batch, threads = ranked
    builders = {f"{name} | {path}": partial(_network_path, name, *path.split(" "), args.in_channels, threads)
                for name, labels in paths.items() for path in labels}
    timed = paired_latency(builders, (batch, args.in_channels, args.size, args.size), rounds, threads, repeats,
                           reuse_memory=not args.default_allocator)
    # network -> path -> median ms of the rounds
    ms = {name: {path: statistics.median(timed[f"{name} | {path}"]) for path in labels}
          for name, labels in paths.items()}
    lm_paths = ms[lm_name]
    lm_best = min(lm_paths.values())
    lm_best_fp32 = min(v for path, v in lm_paths.items() if path.endswith("fp32"))
    print(f"\n# best path per network at b{batch} t{threads}, re-timed in turn, each path in its own process ({rounds} "
          f"rounds of {repeats} forwards, median of the rounds); LM-Net's bf16 / OpenVINO paths: their agreement "
          "with fp32 is measured by scripts/runtime_agreement.py; fp32 paths are exact to 1e-4")
    print(_row(["network", "best path", "ms", "eager fp32 ms", "LM-Net best / this best",
                "LM-Net best / this eager fp32", "LM-Net eager fp32 / this eager fp32",
                "LM-Net best fp32 / this eager fp32"]))
    print(_row(["---"] * 8))
    for name, labels in paths.items():
        if not labels:
            continue
        best = min(labels, key=ms[name].__getitem__)
        eager = ms[name].get("eager fp32", float("nan"))
        print(_row([name, best, f"{ms[name][best]:.1f}", f"{eager:.1f}", f"{lm_best / ms[name][best]:.2f}",
                    f"{lm_best / eager:.2f}", f"{lm_paths.get('eager fp32', float('nan')) / eager:.2f}",
                    f"{lm_best_fp32 / eager:.2f}"]), flush=True)
    if "eager-plain fp32" in lm_paths and "eager fp32" in lm_paths:
        print(f"# LM-Net eager fp32 (oneDNN kernels, pre-packed weights) / its plain eager fp32 modules: "
              f"{lm_paths['eager fp32'] / lm_paths['eager-plain fp32']:.2f}")


PAIRED_BASELINE_PATHS = ("eager-plain fp32", "eager fp32", "eager bf16", "openvino fp32", "openvino bf16")


def _print_paired(args: argparse.Namespace) -> int:
    """LM-Net's deployed paths (eager, OpenVINO; fp32, bf16; with ``--compile`` torch.compile fp32 too) against MONAI
    UNet (64..1024) eager fp32 at b1 t2, each in its own process (``bundle.benchmark.paired_latency``: one runtime's
    worker threads never run beside another's forward): in each of ``args.paired`` rounds, UNet and then every LM-Net
    path are timed one after another (``args.repeats`` forwards each), and each path's ratio to that round's UNet
    time is kept; the table gives the median ratio over the rounds (a shared machine's drift moves both sides of a
    round alike) and its range. Two context rows come first: LM-Net's plain eager modules (the form before the
    oneDNN kernels of the torch runtime) and UNet given the same pre-packed oneDNN convolutions (``pack_for_cpu``).
    With ``--baseline-rev`` every LM-Net path also runs with that git revision's code, in the same rounds."""
    from bundle.runtimes import check_runtime

    unet_name = REFERENCE_NETWORKS["unet"][0]
    builders = {unet_name: reference_models(args.in_channels, 2)[unet_name]}
    # context rows: LM-Net's plain eager modules (before the oneDNN kernels) and UNet given the same weight packing
    builders["eager-plain fp32"] = partial(_network_path, "LM-Net deployed", "eager-plain", "fp32",
                                           args.in_channels, 2)
    builders[f"({unet_name}, eager-packed fp32)"] = partial(_network_path, unet_name, "eager-packed", "fp32",
                                                            args.in_channels, 2)
    runtimes = ["eager", "openvino"] + (["torch.compile"] if args.compile else [])
    for runtime in runtimes:
        for precision in ("fp32",) if runtime == "torch.compile" else ("fp32", "bf16"):
            try:
                check_runtime("openvino" if runtime == "openvino" else "torch", precision)
            except ImportError as err:
                logging.getLogger(__name__).warning("%s %s left out: %s", runtime, precision, err)
                continue
            builders[f"{runtime} {precision}"] = partial(_network_path, "LM-Net deployed", runtime, precision,
                                                         args.in_channels, 2)
    shape = (args.batch, args.in_channels, args.size, args.size)
    with contextlib.ExitStack() as stack:
        if args.baseline_rev:  # the same paths with that revision's code, in the same rounds
            tree = stack.enter_context(revision_checkout(BUNDLE_ROOT, args.baseline_rev))
            for path in [path for path in builders if path in PAIRED_BASELINE_PATHS]:
                runtime, precision = path.split()
                builders[f"{path} at {args.baseline_rev}"] = partial(_lmnet_path_at, str(tree), runtime, precision,
                                                                     args.in_channels, 2)
        times = paired_latency(builders, shape, args.paired, threads=2, repeats=args.repeats,
                               reuse_memory=not args.default_allocator)
    unet_ms = times.pop(unet_name)
    print(f"# LM-Net deployed / {unet_name} eager fp32, {args.size} x {args.size}, b{args.batch}, 2 threads; torch "
          f"{torch.__version__}; {args.paired} rounds, each: UNet then every LM-Net path, each in its own process, "
          f"median of {args.repeats} forwards each; {_allocator_note(args)}; {_attention_note()} (the paths of this "
          "code); fp32 paths exact to 1e-4, bf16 paths validated by scripts/runtime_agreement.py")
    print(_row(["LM-Net path", "ms (median of rounds)", "UNet eager fp32 ms", "median ratio", "ratio range"]))
    print(_row(["---"] * 5))
    for path, path_ms in times.items():
        ratios = [m / u for m, u in zip(path_ms, unet_ms, strict=True)]
        print(_row([path, f"{statistics.median(path_ms):.1f}", f"{statistics.median(unet_ms):.1f}",
                    f"{statistics.median(ratios):.2f}", f"{min(ratios):.2f}-{max(ratios):.2f}"]), flush=True)
    return 0


def _print_volume_seconds(args: argparse.Namespace) -> None:
    """Seconds per 256 x 256 x 40 FLAIR-like volume through the predictor with the shipped LGG weights (or
    ``args.weights``): the first volume of a process (after a 2-slice warm-up that loads the network and, for
    OpenVINO, reads or converts the model) and the next one."""
    import time

    import numpy as np

    from bundle.predictor import Predictor

    rng = np.random.default_rng(0)
    volume = rng.integers(0, 255, (256, 256, 40)).astype(np.float32)
    weights = f"LGG weights {args.weights}" if args.weights else "shipped LGG weights"
    print(f"\n# seconds per 256 x 256 x 40 volume through the predictor ({weights}, 2 threads, CPU); "
          f"OpenVINO: its compiled models already in the disk cache, as after a first run; {_allocator_note(args)}")
    print(_row(["runtime", "precision", "flip averaging", "s / first volume", "s / next volume"]))
    print(_row(["---"] * 5))
    torch.set_num_threads(2)
    for runtime, precision in (("torch", "fp32"), ("openvino", "fp32"), ("openvino", "bf16")):
        for flips in ([1], []):
            overrides = {"tta_flips": flips, "runtime": runtime, "precision": precision,
                         "reuse_freed_memory": not args.default_allocator,
                         **({"ckpt_path": str(args.weights.resolve())} if args.weights else {})}
            if runtime == "openvino":  # a first predictor fills the disk cache; the timed one reads it
                Predictor.from_bundle(BUNDLE_ROOT, "lgg", device="cpu", overrides=overrides).predict_array(volume)
            predictor = Predictor.from_bundle(BUNDLE_ROOT, "lgg", device="cpu", overrides=overrides)
            predictor.predict_array(volume[..., :2])
            seconds = []
            for _ in range(2):
                start = time.perf_counter()
                predictor.predict_array(volume)
                seconds.append(f"{time.perf_counter() - start:.2f}")
            print(_row([runtime, precision, "left-right" if flips else "off", *seconds]), flush=True)


VOLUME_NETWORKS = {  # 3D peers, as MONAI's tutorials configure them
    "MONAI UNet 3D (16..256, 2 res units)": {"_target_": "monai.networks.nets.UNet",
                                             "channels": [16, 32, 64, 128, 256], "strides": [2, 2, 2, 2],
                                             "num_res_units": 2},
    "MONAI SegResNet (8 filters)": {"_target_": "monai.networks.nets.SegResNet", "init_filters": 8},
    "MONAI SwinUNETR 3D (feature 48)": {"_target_": "monai.networks.nets.SwinUNETR", "feature_size": 48},
}


def _deployed_lmnet(**kwargs) -> torch.nn.Module:
    """The re-parameterized, channels-last LM-Net of ``kwargs`` (a module-level builder: fresh processes pickle it)."""
    return to_channels_last(reparameterize_model(LMNet(**kwargs)))


LMNET_RUNTIME_ROW = "LM-Net deployed, torch fp32 runtime (oneDNN kernels)"


def _runtime_lmnet(**kwargs) -> torch.nn.Module:
    """:func:`_deployed_lmnet` as the torch fp32 runtime runs it on the CPU (a module-level builder)."""
    return runtime_network(_deployed_lmnet(**kwargs), "torch", "fp32")


def _print_volumes(args: argparse.Namespace) -> int:
    """The 3D cost table: parameters, MACs and latency of one 96^3 window, seconds per LGG-like 256 x 256 x 32
    volume through MONAI's sliding-window inferer (roi 96 x 96 x 32, overlap 0.25, Gaussian blending), and (without
    ``--quick``) the peak memory of that forward and one training step on one 96 x 96 x 32 patch (the lgg3d
    overlay's patch): seconds and peak memory, each in a fresh process."""
    import time

    from monai.inferers import SlidingWindowInferer

    from bundle.benchmark import network_from_def

    dims = {"spatial_dims": 3, "in_channels": args.in_channels, "out_channels": 2}
    builders = {"LM-Net 3D training form": partial(LMNet, **dims),
                "LM-Net 3D deployed": partial(_deployed_lmnet, **dims)}
    if not args.lmnet_only:
        builders.update({name: partial(network_from_def, {**config, **dims})
                         for name, config in VOLUME_NETWORKS.items()})
    window = (1, args.in_channels, 96, 96, 96)
    volume = torch.randn(1, args.in_channels, 256, 256, 32)
    inferer = SlidingWindowInferer(roi_size=(96, 96, 32), sw_batch_size=1, overlap=0.25, mode="gaussian")
    repeats = 2 if args.quick else 3
    print(f"# 3D, {args.in_channels} input channel(s), 2 classes; torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, 2 threads; MACs: {MAC_COUNTER}")
    header = ["model", "params (M)", "MACs (G) 96^3", "ms 96^3 b1", "s / 256x256x32 volume (sliding window)"]
    if not args.quick:
        header += ["peak MiB 96^3 b1", "training s / step (1 patch 96x96x32)", "training peak GiB"]
    print(_row(header))
    print(_row(["---"] * len(header)))
    for name, build in builders.items():
        model = build().eval()
        cells = [name, f"{count_parameters(model) / 1e6:.2f}", f"{count_macs(model, window) / 1e9:.1f}",
                 f"{measure_latency(model, window, threads=2, repeats=repeats, warmup=1):.0f}"]
        torch.set_num_threads(2)
        with torch.inference_mode():
            start = time.perf_counter()
            inferer(volume, model)
            cells.append(f"{time.perf_counter() - start:.1f}")
        if not args.quick:
            cells.append(f"{measure_peak_memory(build, window, threads=2):.0f}")
            if "deployed" in name:  # the deployed form does not train
                cells += ["-", "-"]
            else:
                seconds, peak = measure_training_step(build, (1, args.in_channels, 96, 96, 32), threads=2)
                cells += [f"{seconds:.1f}", f"{peak / 1024:.1f}"]
        print(_row(cells), flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=256, help="square input side in pixels (default 256)")
    parser.add_argument("--in-channels", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per setting; the median is shown")
    parser.add_argument("--quick", action="store_true", help="batch 1 and 2 threads only, 3 runs, no memory column")
    parser.add_argument("--lmnet-only", action="store_true", help="skip MONAI's reference networks")
    parser.add_argument("--compile", action="store_true",
                        help="also time torch.compile'd LM-Net (deployed) and UNet; with --paired, LM-Net compiled")
    parser.add_argument("--ablations", action="store_true",
                        help="only parameters and MACs of the ablation switches (branch_kernels, gft_input, skips)")
    parser.add_argument("--volumes", action="store_true",
                        help="only the 3D table: LM-Net 3D vs MONAI's 3D UNet, SegResNet, SwinUNETR (96^3, 256x256x32)")
    parser.add_argument("--runtimes", action="store_true",
                        help="only the runtime table: eager / torch.compile / OpenVINO x fp32 / bf16, and s / volume")
    parser.add_argument("--no-compile", action="store_true",
                        help="--runtimes without torch.compile rows (compiling LM-Net takes over 15 min on 2 cores)")
    parser.add_argument("--case-seconds", action="store_true",
                        help="only the last table of --runtimes: s per 256 x 256 x 40 volume through the predictor")
    parser.add_argument("--weights", type=Path,
                        help="with --case-seconds / --runtimes: the LGG weights file the predictor runs (default the "
                             "shipped one; e.g. an ensemble file, scripts/build_ensemble.py)")
    parser.add_argument("--paired", type=int, metavar="ROUNDS",
                        help="only LM-Net's paths / MONAI UNet eager fp32 (2 threads, batch --batch), timed back to "
                             "back per round")
    parser.add_argument("--batch", type=int, default=1, help="batch size of --paired (default 1)")
    parser.add_argument("--baseline-rev", metavar="REV",
                        help="with --paired: also time every LM-Net path with the code of this git revision, in the "
                             "same rounds (a before / after of a speed change)")
    parser.add_argument("--default-allocator", action="store_true",
                        help="time with glibc's default allocator settings instead of the bundle's (every network "
                             "alike; the bundle's configs keep freed memory for reuse: bundle.allocator)")
    parser.add_argument("--profile", action="store_true",
                        help="only the profile of LM-Net's deployed forward (b1, 2 threads): operators and modules")
    parser.add_argument("--plain", action="store_true",
                        help="with --profile: the deployed network's own modules, not the torch runtime's oneDNN form")
    parser.add_argument("--openvino", choices=["fp32", "bf16"],
                        help="with --profile: as OpenVINO's CPU plugin runs the deployed network, in this precision "
                             "(per-node times; needs the openvino extra)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)
    if args.profile:
        return _print_profile(args)
    if args.ablations:
        return _print_ablations(args)
    if args.runtimes:
        return _print_runtimes(args)
    if args.case_seconds:
        _print_volume_seconds(args)
        return 0
    if args.paired is not None:
        if args.paired < 1 or args.batch < 1:
            parser.error(f"--paired needs at least 1 round and --batch at least 1, got {args.paired}, {args.batch}.")
        return _print_paired(args)
    if args.volumes:
        return _print_volumes(args)

    settings = [(1, 2)] if args.quick else [(1, 1), (1, 2), (8, 1), (8, 2)]  # (batch, threads)
    repeats = 3 if args.quick else args.repeats
    builders = {
        "LM-Net training form": partial(LMNet, in_channels=args.in_channels, out_channels=2),
        "LM-Net deployed (re-parameterized)": partial(LMNet, in_channels=args.in_channels, out_channels=2, deploy=True),
    }
    if not args.lmnet_only:
        builders.update(reference_models(args.in_channels, 2))
    compiled = {}
    if args.compile:
        compiled["LM-Net deployed + torch.compile"] = builders["LM-Net deployed (re-parameterized)"]
        if not args.lmnet_only:
            unet = "MONAI UNet (64..1024, 2 res units)"
            compiled[unet + " + torch.compile"] = builders[unet]

    shape1 = (1, args.in_channels, args.size, args.size)
    print(f"# {args.size} x {args.size}, {args.in_channels} input channel(s), 2 classes; torch {torch.__version__}, "
          f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads available")
    print(f"# MACs: {MAC_COUNTER}; latency: median of {repeats} eval forwards (torch.inference_mode) after warm-up")
    header = ["model", "params (M)", "MACs (G)"]
    header += [f"ms b{b} t{t}" for b, t in settings] + [f"images/s b{settings[-1][0]} t{settings[-1][1]}"]
    if not args.quick:
        header.append("peak MiB b1 t1")
    print(_row(header))
    print(_row(["---"] * len(header)))
    rows = [(name, build, "eager") for name, build in builders.items()]
    # the deployed network as the torch fp32 runtime runs it on the CPU (oneDNN kernels, pre-packed weights)
    rows.insert(2, (LMNET_RUNTIME_ROW, builders["LM-Net deployed (re-parameterized)"], "runtime"))
    rows += [(name, build, "compile") for name, build in compiled.items()]
    for name, build, mode in rows:
        model = build().eval()
        if name.startswith("LM-Net deployed"):
            model = to_channels_last(reparameterize_model(model, inplace=True))  # as users get it
        cells = [name, f"{count_parameters(model) / 1e6:.2f}", f"{count_macs(model, shape1) / 1e9:.2f}"]
        runner = model
        if mode == "compile":
            runner = compile_for_inference(model)  # compiled during the warm-up run
        elif mode == "runtime":
            runner = runtime_network(model, "torch", "fp32")
        latencies = [measure_latency(runner, (b, *shape1[1:]), t, repeats, warmup=2) for b, t in settings]
        cells += [f"{ms:.1f}" for ms in latencies]
        cells.append(f"{settings[-1][0] * 1e3 / latencies[-1]:.1f}")
        if not args.quick:
            memory_build = partial(_runtime_lmnet, in_channels=args.in_channels) if mode == "runtime" else build
            memory = "-" if mode == "compile" else f"{measure_peak_memory(memory_build, shape1, threads=1):.0f}"
            cells.append(memory)
        print(_row(cells), flush=True)
    for source, params, macs in PUBLISHED:
        print(_row([source, f"{params:.2f}", f"{macs:.2f}"] + ["-"] * (len(header) - 3)))

    torch.set_num_threads(2)
    for name, model in (("training", LMNet(in_channels=args.in_channels)), ("deployed", None)):
        if model is None:
            model = to_channels_last(reparameterize_model(LMNet(in_channels=args.in_channels)))
        share = module_time_share(model, shape1, NeighborhoodAttention, repeats=repeats)
        print(f"# neighborhood attention share of the {name} forward time (b1, 2 threads): {100 * share:.1f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
