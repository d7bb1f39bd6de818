"""Measuring networks: parameters, multiply-accumulates, latency, peak memory, and where forward time goes.

Used by ``scripts/model_stats.py``; kept in the library so that tests and other scripts share one definition of
each number. Timing happens here, never in tests.
"""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import re
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

from .allocator import reuse_freed_memory

__all__ = [
    "MAC_COUNTER",
    "count_parameters",
    "count_macs",
    "compile_for_inference",
    "measure_latency",
    "measure_peak_memory",
    "measure_training_step",
    "in_fresh_process",
    "paired_latency",
    "module_time_share",
    "openvino_profile",
    "profile_forward",
    "reference_models",
    "revision_checkout",
]

MAC_COUNTER = (
    "torch.utils.flop_counter.FlopCounterMode (FLOPs / 2: convs, linear layers, matmuls, SDPA attention products) "
    "+ neighborhood-attention products counted analytically (2 x B x H x W x C x k^2; 3D: x D x k)"
)


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FLOPs of CPU scaled-dot-product attention (PyTorch's counter lacks a formula for the CPU kernel)."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


_CUSTOM_FLOPS: dict = {}
if hasattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu"):
    _CUSTOM_FLOPS[torch.ops.aten._scaled_dot_product_flash_attention_for_cpu] = _cpu_sdpa_flops


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (trainable or not)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one eval-mode forward pass on a zero input of ``input_shape`` (B, C, *S).

    Counted by :data:`MAC_COUNTER`: convolutions, linear layers and matrix products including both attention
    products (Q K^T and A V); element-wise work (norms, activations, softmax) is not counted, as in ``thop``.
    """
    from .networks.blocks import NeighborhoodAttention

    device = next(model.parameters()).device
    counter = FlopCounterMode(display=False, custom_mapping=_CUSTOM_FLOPS)
    extra = [0]

    def neighborhood_macs(module: NeighborhoodAttention, args, output) -> None:
        shape = args[0].shape  # (B, *S, C): Q.K and A.V, each position meets the keys of its window over C channels
        window = 1
        for size in shape[1:-1]:
            window *= min(module.kernel_size, size)
        extra[0] += 2 * shape[:-1].numel() * shape[-1] * window

    attention = [m for m in model.modules() if isinstance(m, NeighborhoodAttention)]
    handles = [m.register_forward_hook(neighborhood_macs) for m in attention]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(*input_shape, device=device))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return counter.get_total_flops() // 2 + extra[0]


def compile_for_inference(model: nn.Module) -> nn.Module:
    """``torch.compile(model)`` for a network that only runs inference: Inductor's ``freezing`` (the weights become
    constants of the compiled graph: convolution and linear weights pre-packed for oneDNN, element-wise operations
    fused into the convolutions before them) and ``cpp_wrapper`` (C++, not Python, calls the kernels). Compiling
    happens at the first call for each input shape (minutes for LM-Net on 2 cores); run it under
    ``torch.inference_mode()`` and do not change ``model``'s weights afterwards (the compiled graph may hold
    pre-packed copies of them). The output equals the eager model's up to fp32 rounding."""
    return torch.compile(model, options={"freezing": True, "cpp_wrapper": True})


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    model: nn.Module, input_shape: Sequence[int], threads: int | None = None, repeats: int = 10, warmup: int = 2
) -> float:
    """Median wall time in milliseconds of an eval-mode, no-grad forward pass on ``input_shape``.

    Args:
        model: the network (on its device; CUDA is synchronised around each run).
        input_shape: (B, C, *S).
        threads: CPU threads for intra-op parallelism during the measurement (restored afterwards).
        repeats: timed runs; the median is returned.
        warmup: untimed runs first.
    """
    device = next(model.parameters()).device
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    x = torch.randn(*input_shape, device=device)
    model.eval()
    times: list[float] = []
    try:
        with torch.inference_mode():
            for i in range(warmup + repeats):
                _sync(device)
                start = time.perf_counter()
                model(x)
                _sync(device)
                if i >= warmup:
                    times.append((time.perf_counter() - start) * 1e3)
    finally:
        torch.set_num_threads(previous)
    return statistics.median(times)


def module_time_share(model: nn.Module, input_shape: Sequence[int], module_type: type, repeats: int = 5) -> float:
    """Fraction (0..1) of eval forward time spent inside modules of ``module_type`` (CPU wall time via hooks)."""
    spent = [0.0]
    starts: list[float] = []

    def pre_hook(module, args):
        starts.append(time.perf_counter())

    def post_hook(module, args, output):
        spent[0] += time.perf_counter() - starts.pop()

    handles = []
    for m in model.modules():
        if isinstance(m, module_type):
            handles += [m.register_forward_pre_hook(pre_hook), m.register_forward_hook(post_hook)]
    x = torch.randn(*input_shape)
    model.eval()
    try:
        with torch.inference_mode():
            model(x)  # warm-up
            spent[0] = 0.0
            start = time.perf_counter()
            for _ in range(repeats):
                model(x)
            total = time.perf_counter() - start
    finally:
        for h in handles:
            h.remove()
    return spent[0] / total


def profile_forward(
    model: nn.Module, input_shape: Sequence[int], threads: int = 2, repeats: int = 5, top: int = 15
) -> tuple[list[tuple[str, float, int]], list[tuple[str, float]]]:
    """Where an eval-mode, no-grad forward pass spends its CPU time.

    Returns:
        ``(operators, modules)``: the ``top`` operators by self CPU time as ``(name, share of the total 0..1, calls per
        forward)`` (``torch.profiler``, ``repeats`` passes after a warm-up), and every direct child module of
        ``model`` as ``(name, share of the forward's wall time)`` (forward hooks; the median of the module's time
        over the passes against the median pass, so that one stalled pass does not move a module), largest first.
    """
    from torch.profiler import ProfilerActivity, profile

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    x = torch.randn(*input_shape)
    model.eval()
    spent: dict[str, list[float]] = {}  # module -> seconds in each pass
    starts: dict[str, float] = {}

    def timed(name: str):
        def pre(module, args):
            starts[name] = time.perf_counter()

        def post(module, args, output):
            spent.setdefault(name, []).append(time.perf_counter() - starts[name])

        return pre, post

    try:
        with torch.inference_mode():
            model(x)
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                for _ in range(repeats):
                    model(x)
            handles = []
            for name, child in model.named_children():
                pre, post = timed(name)
                handles += [child.register_forward_pre_hook(pre), child.register_forward_hook(post)]
            passes = []
            for _ in range(repeats):
                start = time.perf_counter()
                model(x)
                passes.append(time.perf_counter() - start)
            for handle in handles:
                handle.remove()
    finally:
        torch.set_num_threads(previous)
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    operators = [(e.key, e.self_cpu_time_total / total, e.count // repeats) for e in events[:top]]
    median_pass = statistics.median(passes)
    shares = []
    for name, times in spent.items():
        calls = len(times) // repeats  # calls per forward; ``times`` runs pass by pass
        per_pass = [sum(times[i * calls : (i + 1) * calls]) for i in range(repeats)]
        shares.append((name, statistics.median(per_pass) / median_pass))
    modules = sorted(shares, key=lambda kv: kv[1], reverse=True)
    return operators, modules


@contextlib.contextmanager
def revision_checkout(repository: str | Path, rev: str) -> Iterator[Path]:
    """A temporary detached checkout (``git worktree``) of revision ``rev`` of ``repository``, removed on exit: the
    code a before / after timing runs as "before" (``--baseline-rev`` of ``scripts/model_stats.py`` and
    ``scripts/benchmark_training.py``).

    Raises:
        subprocess.CalledProcessError: ``repository`` is not a git repository or has no revision ``rev``.
    """
    with tempfile.TemporaryDirectory(prefix="lmnet_baseline_") as tmp:
        tree = Path(tmp) / "tree"
        subprocess.run(["git", "-C", str(repository), "worktree", "add", "--detach", "-f", str(tree), rev], check=True,
                       capture_output=True)
        try:
            yield tree
        finally:
            subprocess.run(["git", "-C", str(repository), "worktree", "remove", "--force", str(tree)], check=False,
                           capture_output=True)


_MODULE_IN_NODE_NAME = re.compile(r"__module\.([A-Za-z_][A-Za-z0-9_]*)")  # OpenVINO node name -> top-level module


def openvino_profile(
    model: nn.Module, input_shape: Sequence[int], precision: str = "fp32", threads: int = 2, repeats: int = 20,
    top: int | None = None,
) -> tuple[list[tuple[str, float, int]], list[tuple[str, float]], tuple[float, float]]:
    """Where OpenVINO's CPU plugin spends a forward of ``model``, converted and compiled by the ``openvino`` runtime
    (:class:`bundle.runtimes.OpenVINONetwork`; per-node times switched on for one compiled model: ``PERF_COUNT``).

    The plugin's per-node execution times, summed over ``repeats`` inferences after a warm-up, on one random input of
    ``input_shape``.

    Returns:
        ``(node_types, modules, (node_ms, wall_ms))``: the executed node types (Convolution, Multiply, ...; only
        the ``top`` largest when given) as ``(type, share of the total 0..1, executed nodes per forward)``; the share
        of every top-level module of ``model`` (read from the node names the converter gives, ``__module.<name>...``;
        ``(other)`` for nodes it named otherwise), largest first; and the per-node times summed per forward beside
        the median wall time of a forward of the same conversion compiled without per-node counters
        (:func:`measure_latency`), both in ms. The counters cost time in every node, so a graph of many small nodes
        has a node sum above its wall time and a larger share here than it takes.
    """
    from .runtimes import OpenVINONetwork

    runtime = OpenVINONetwork(model.eval(), precision, threads=threads)
    request = runtime.compiled_for(tuple(input_shape), {"PERF_COUNT": "YES"}).create_infer_request()
    data = torch.randn(*input_shape).numpy()
    for _ in range(3):
        request.infer([data])
    by_type: dict[str, float] = {}
    executed: dict[str, int] = {}
    by_module: dict[str, float] = {}
    for _ in range(repeats):
        request.infer([data])
        for node in request.profiling_info:
            seconds = node.real_time.total_seconds()
            if seconds <= 0:
                continue  # not executed (constant, in-place or fused into another node)
            by_type[node.node_type] = by_type.get(node.node_type, 0.0) + seconds
            executed[node.node_type] = executed.get(node.node_type, 0) + 1
            found = _MODULE_IN_NODE_NAME.search(node.node_name)
            module = found.group(1) if found else "(other)"
            by_module[module] = by_module.get(module, 0.0) + seconds
    total = sum(by_type.values())
    types = sorted(by_type.items(), key=lambda kv: kv[1], reverse=True)[:top]
    node_types = [(name, spent / total, executed[name] // repeats) for name, spent in types]
    modules = sorted(((name, spent / total) for name, spent in by_module.items()), key=lambda kv: kv[1], reverse=True)
    wall_ms = measure_latency(runtime, input_shape, threads, repeats, warmup=3)
    return node_types, modules, (total / repeats * 1e3, wall_ms)


def _status_kib(field: str) -> int:
    """A ``/proc/self/status`` memory field (``VmRSS``, ``VmHWM``) in KiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _reset_peak_rss() -> int:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current resident set; returns that resident set in KiB."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    return _status_kib("VmRSS")


def _peak_rise_mib(before_kib: int) -> float:
    """How far the peak resident set rose above ``before_kib`` since :func:`_reset_peak_rss`, in MiB."""
    return (_status_kib("VmHWM") - before_kib) / 1024.0


def _forward_peak(builder: Callable[[], nn.Module], input_shape: tuple[int, ...]) -> float:
    model = builder().eval()
    x = torch.randn(*input_shape)
    before = _reset_peak_rss()
    with torch.inference_mode():
        model(x)
    return _peak_rise_mib(before)


def _training_steps(builder: Callable[[], nn.Module], input_shape: tuple[int, ...], steps: int) -> tuple[float, float]:
    torch.manual_seed(0)
    model = builder().train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    x = torch.randn(*input_shape)
    target = torch.randint(0, 2, (input_shape[0], *input_shape[2:]))
    before = _reset_peak_rss()
    seconds = []
    for _ in range(steps + 1):  # the first step (allocations, kernel selection) is not timed
        start = time.perf_counter()
        loss = nn.functional.cross_entropy(model(x), target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds[1:]), _peak_rise_mib(before)


def _spawn_daemon(target: Callable, args: tuple) -> tuple:
    """Start ``target(*args, conn)`` in a fresh (spawned) daemon process; returns (process, the parent's end of the
    pipe ``conn``).

    A daemon cannot start processes of its own: ``openvino.convert_model`` sends telemetry events, each from a new
    process, and in a spawned process each of them re-imports the program and takes the CPU from the forward being
    timed for seconds (OpenVINO at batch 1 measured several times slower); a daemon's telemetry fails quietly.
    """
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=target, args=(*args, child), daemon=True)
    proc.start()
    child.close()
    return proc, parent


def _reply(label: str, proc, conn):
    """The next reply (``("ok", value)`` or ``("error", message)``) of a measuring process; raises ``RuntimeError``
    naming ``label`` on an error or a dead process."""
    while not conn.poll(2.0):
        if not proc.is_alive():
            raise RuntimeError(f"the process measuring {label} exited with code {proc.exitcode} before replying "
                               "(killed for memory?)")
    status, value = conn.recv()
    if status == "error":
        raise RuntimeError(f"measuring {label} failed: {value}")
    return value


def _process_settings(threads: int, reuse_memory: bool) -> None:
    """The settings of a measuring process: ``threads`` CPU threads and, with ``reuse_memory``, the allocator setting
    the bundle's training and inference configs apply (:func:`bundle.allocator.reuse_freed_memory`), whatever network
    the process times, so that every network is measured under the same allocator."""
    torch.set_num_threads(threads)
    reuse_freed_memory(reuse_memory)


def _worker(measure: Callable, threads: int, reuse_memory: bool, args: tuple, conn) -> None:
    try:
        _process_settings(threads, reuse_memory)
        conn.send(("ok", measure(*args)))
    except Exception as err:  # noqa: BLE001 - reported to the parent, which raises
        conn.send(("error", f"{type(err).__name__}: {err}"))


def in_fresh_process(measure: Callable, threads: int, *args, label: str = "the measurement",
                     reuse_memory: bool = False):
    """``measure(*args)`` in a fresh (spawned) daemon process (see :func:`_spawn_daemon`) with ``threads`` CPU threads;
    returns its result. ``measure`` and ``args`` must be picklable (module-level functions, ``functools.partial``);
    ``label`` names what is measured in errors; ``reuse_memory``: the process keeps freed memory for reuse, as the
    bundle's configs run (:func:`bundle.allocator.reuse_freed_memory`; ``False``, the default: glibc's defaults, under
    which :func:`measure_peak_memory` and :func:`measure_training_step` measure).

    Raises:
        RuntimeError: ``measure`` raised in the worker, or the worker died before reporting (e.g. killed for memory).
    """
    proc, conn = _spawn_daemon(_worker, (measure, threads, reuse_memory, args))
    try:
        return _reply(label, proc, conn)
    finally:
        proc.join()


def _latency_server(build: Callable[[], nn.Module], input_shape: tuple[int, ...], threads: int, repeats: int,
                    reuse_memory: bool, conn) -> None:
    """Build one network (and compile it, by a first forward), then time it whenever the parent asks, until it sends
    ``None``. Replies ``("ok", ms)`` or ``("error", message)``."""
    try:
        _process_settings(threads, reuse_memory)
        model = build()
        measure_latency(model, input_shape, threads, repeats=1, warmup=1)
        conn.send(("ok", None))
    except Exception as err:  # noqa: BLE001 - reported to the parent
        conn.send(("error", f"{type(err).__name__}: {err}"))
        return
    while conn.recv() is not None:
        conn.send(("ok", measure_latency(model, input_shape, threads, repeats, warmup=1)))


def paired_latency(builders: dict[str, Callable[[], nn.Module]], input_shape: Sequence[int], rounds: int,
                   threads: int = 2, repeats: int = 5, settle_s: float = 0.2,
                   reuse_memory: bool = True) -> dict[str, list[float]]:
    """Median forward latency (ms) of every network in ``builders``, per round, each network in its own process.

    Runtimes keep their own worker threads (PyTorch's OpenMP pool, OpenVINO's TBB pool), which spin for a while
    after each call; timed in one process, one runtime's threads take CPU from the next runtime's forward. Here each
    builder runs in its own spawned daemon process (:func:`_spawn_daemon`), kept for all rounds (built and warmed up
    once: conversions and compilations happen before any timing); in each round the processes time their network one
    after another, in the order of ``builders``, the others idle, with ``settle_s`` seconds between them, so
    neighbouring rounds share the machine's drift and no two runtimes overlap.

    Args:
        builders: label -> picklable zero-argument function returning the network to time (eval mode).
        input_shape: (B, C, *S) of the random input.
        rounds: timed rounds.
        threads: CPU threads of every process.
        repeats: forwards per process and round; the median is kept.
        settle_s: idle seconds between two processes' timings.
        reuse_memory: every process keeps freed memory for reuse, as the bundle's configs run
            (:func:`bundle.allocator.reuse_freed_memory`); ``False``: glibc's defaults in every process.

    Returns:
        label -> ``rounds`` medians in ms.

    Raises:
        RuntimeError: a builder or a forward failed (the message names the label) or a process died.
    """
    servers: dict[str, tuple] = {}
    try:
        for label, build in builders.items():
            servers[label] = _spawn_daemon(_latency_server, (build, tuple(input_shape), threads, repeats,
                                                           reuse_memory))
        for label in servers:
            _reply(label, *servers[label])
        times: dict[str, list[float]] = {label: [] for label in servers}
        for _ in range(rounds):
            for label, (proc, conn) in servers.items():
                time.sleep(settle_s)
                conn.send("time")
                times[label].append(float(_reply(label, proc, conn)))
        return times
    finally:
        for proc, conn in servers.values():
            try:
                conn.send(None)
            except (BrokenPipeError, OSError):
                pass
            proc.join(timeout=10)
            if proc.is_alive():
                proc.kill()


def measure_peak_memory(builder: Callable[[], nn.Module], input_shape: Sequence[int], threads: int = 1) -> float:
    """Peak extra CPU memory (MiB) of one forward pass, measured in a fresh process (Linux): the model is built,
    the kernel's peak-RSS mark is reset (``/proc/self/clear_refs``), one inference-mode forward runs on
    ``input_shape``, and the new peak minus the resident set before the forward is returned.

    ``builder`` must be picklable (a module-level function or ``functools.partial``). Raises ``RuntimeError`` as
    :func:`measure_training_step` does.
    """
    return float(in_fresh_process(_forward_peak, threads, builder, tuple(input_shape),
                                  label=f"a forward's peak memory on input {tuple(input_shape)}"))


def measure_training_step(builder: Callable[[], nn.Module], input_shape: Sequence[int], threads: int = 2,
                          steps: int = 2) -> tuple[float, float]:
    """One plain training step (forward, cross-entropy against random labels, backward, AdamW) on ``input_shape``,
    in a fresh process (Linux): returns (median seconds of ``steps`` timed steps after one untimed, peak extra MiB
    over the resident set after the model is built). ``builder`` must be picklable.

    Raises:
        RuntimeError: the step failed in the worker, or the worker died (e.g. killed for memory).
    """
    seconds, peak = in_fresh_process(_training_steps, threads, builder, tuple(input_shape), steps,
                                     label=f"a training step on input {tuple(input_shape)}")
    return float(seconds), float(peak)


# MONAI's own 2D networks used as baselines: key -> (table label, ``network_def`` config without the spatial
# dimensions and channels); ``scripts.compare`` trains these same definitions through the bundle's configs.
REFERENCE_NETWORKS: dict[str, tuple[str, dict]] = {
    "unet": (
        "MONAI UNet (64..1024, 2 res units)",
        {"_target_": "monai.networks.nets.UNet", "channels": [64, 128, 256, 512, 1024], "strides": [2, 2, 2, 2],
         "num_res_units": 2},
    ),
    "basicunet": ("MONAI BasicUNet (32..256)", {"_target_": "monai.networks.nets.BasicUNet"}),
    "attentionunet": (
        "MONAI AttentionUnet (64..1024)",
        {"_target_": "monai.networks.nets.AttentionUnet", "channels": [64, 128, 256, 512, 1024],
         "strides": [2, 2, 2, 2]},
    ),
    "swinunetr": ("MONAI SwinUNETR 2D (feature 24)", {"_target_": "monai.networks.nets.SwinUNETR", "feature_size": 24}),
}


def network_from_def(config: dict) -> nn.Module:
    """Instantiate a ``network_def`` config (``{"_target_": ..., **kwargs}``) the way the bundle configs do."""
    from monai.bundle import ConfigParser

    return ConfigParser({"net": config}).get_parsed_content("net")


def reference_models(in_channels: int = 1, out_channels: int = 2) -> dict[str, Callable[[], nn.Module]]:
    """Builders of :data:`REFERENCE_NETWORKS` in 2D (table label -> picklable zero-argument builder)."""
    dims = {"spatial_dims": 2, "in_channels": in_channels, "out_channels": out_channels}
    return {label: partial(network_from_def, {**config, **dims}) for label, config in REFERENCE_NETWORKS.values()}
