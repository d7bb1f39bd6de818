"""Inference runtimes for the deployed network: PyTorch (default) or OpenVINO on the CPU, fp32 or bfloat16.

The inference config's ``runtime`` (``"torch"`` | ``"openvino"``) and ``precision`` (``"fp32"`` | ``"bf16"``) settings
select one; :func:`runtime_network` wraps the re-parameterized network accordingly and both the ``Segmenter`` (batch
predictor, Python API, MONAI Label) and the config's evaluator (``RuntimeHandler``) run the wrapper, so every path
gives the same labels for the same settings.

OpenVINO (``pip install openvino``, the ``openvino`` extra) converts the deployed PyTorch network with a fixed
spatial input shape (the slices the inferer feeds: ``roi_size``) and a dynamic batch. The converted model is cached
beside the weights file, in ``<weights folder>/openvino/``, named by the weights' SHA-256, a digest of the network
code (``bundle/networks``: it defines the converted graph), the input shape, the OpenVINO version and the compiled
attention operation it holds (``bundle/openvino_kernels``: neighborhood attention as one CPU operation, built on first
use where a C++ compiler is present; ``graph`` where it is not) (or under ``$LMNET_CACHE_DIR`` / ``~/.cache/lmnet``
when that folder is not writable), so a second run skips the conversion;
the models compiled from it (one per batch bucket) are cached in its ``compiled/`` sub-folder, so a second run skips
compiling as well. ``bf16`` asks OpenVINO's CPU plugin for bfloat16 inference (AMX / AVX512-BF16 CPUs; on others the
plugin computes in fp32) and PyTorch for CPU bfloat16 autocast. On CUDA, reduced precision is the ``amp`` setting
(fp16 autocast), as before.

The agreement of each runtime / precision with PyTorch fp32 is measured by ``scripts/runtime_agreement.py`` on the
real test split and checked by ``tests/test_runtimes.py`` on a real-shaped input.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn as nn

from .checkpoints import sha256_file
from .openvino_kernels import convert_with_kernels, holds_window_attention, kernel_library

__all__ = ["RUNTIMES", "PRECISIONS", "check_runtime", "check_cpu_precision", "cpu_has_native_bf16",
           "warn_unless_native_bf16", "bf16_forward", "runtime_network",
           "OpenVINONetwork", "RuntimeHandler", "batch_bucket", "network_code_digest"]

logger = logging.getLogger(__name__)

RUNTIMES = ("torch", "openvino")
PRECISIONS = ("fp32", "bf16")


def check_runtime(runtime: str, precision: str) -> None:
    """Raise ``ValueError`` naming the choices when ``runtime`` or ``precision`` is not one of them, and
    ``ImportError`` with the install command when OpenVINO is asked for but missing."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}.")
    check_cpu_precision(precision, None)
    if runtime == "openvino":
        try:
            import openvino  # noqa: F401
        except ImportError as err:
            raise ImportError("runtime 'openvino' needs the openvino package: pip install 'openvino==2026.4.1' "
                              "(or the bundle's 'openvino' extra).") from err


def check_cpu_precision(precision: str, device: torch.device | str | None) -> None:
    """Raise ``ValueError`` when ``precision`` is not one of :data:`PRECISIONS`, or is reduced on a CUDA device
    (there the ``amp`` setting gives fp16 autocast)."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    if precision != "fp32" and device is not None and torch.device(device).type == "cuda":
        raise ValueError(f"precision {precision!r} is a CPU setting; on CUDA use precision 'fp32' and the amp setting "
                         "for fp16.")


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AVX512-BF16 or AMX); elsewhere PyTorch emulates it, slower than
    fp32."""
    checks = [getattr(torch.cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(check() for check in checks if check is not None)


def warn_unless_native_bf16(what: str) -> None:
    """Log a warning that ``what`` (a bf16 path) will be slow when the CPU has no native bfloat16."""
    if not cpu_has_native_bf16():
        logger.warning("%s: this CPU has no native bfloat16 (AVX512-BF16 or AMX), so bf16 runs emulated, slower "
                       "than fp32.", what)


def bf16_forward(network, x: torch.Tensor) -> torch.Tensor:
    """``network(x)`` under CPU bfloat16 autocast (convolutions and linear layers in bf16, reductions such as the
    norms in fp32), returned in fp32; differentiable (backward follows the forward's dtypes)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = network(x)
    return out.float()


class _TorchBF16(nn.Module):
    """The network under CPU bfloat16 autocast; outputs in fp32."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bf16_forward(self.network, x)


@functools.cache
def network_code_digest() -> str:
    """SHA-256 (hex) of the source of ``bundle/networks`` (every ``.py`` file, by relative path): the code a converted
    graph comes from, so a cached conversion is not reused after that code changes."""
    root = Path(__file__).resolve().parent / "networks"
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def _cache_root(weights: str | os.PathLike) -> Path:
    beside = Path(weights).resolve().parent / "openvino"
    with contextlib.suppress(OSError):
        beside.mkdir(exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=beside, prefix=".probe", delete=True)
        probe.close()
        return beside
    fallback = Path(os.environ.get("LMNET_CACHE_DIR", Path.home() / ".cache" / "lmnet")) / "openvino"
    fallback.mkdir(parents=True, exist_ok=True)
    return fallback


class OpenVINONetwork(nn.Module):
    """A deployed network run by OpenVINO's CPU plugin: (B, C, *S) float tensor -> (B, classes, *S) fp32 tensor.

    One OpenVINO model per input shape (batch dynamic), converted on first use, cached on disk when ``weights`` is
    given (see the module docstring); compiled once per batch bucket (:func:`batch_bucket`: a batch of 5 runs as 8,
    zero-filled) with the batch fixed (the CPU plugin runs static shapes faster), with ``INFERENCE_PRECISION_HINT``
    f32 or bf16; with ``weights`` the compiled models are cached on disk as well (OpenVINO's ``CACHE_DIR``). A 2D
    LM-Net's neighborhood attention becomes one compiled operation per LFT where ``bundle.openvino_kernels`` builds
    (a C++ compiler on Linux), else OpenVINO's own operations; both are the same function.

    Args:
        network: the deployed (re-parameterized) PyTorch network, eval mode, on the CPU.
        precision: "fp32" or "bf16".
        weights: the weights file the network holds (names the cache); ``None``: convert in memory, no cache.
        threads: CPU threads for OpenVINO (``None``: PyTorch's current setting).
    """

    def __init__(self, network: nn.Module, precision: str = "fp32", weights: str | os.PathLike | None = None,
                 threads: int | None = None) -> None:
        super().__init__()
        check_runtime("openvino", precision)
        import openvino as ov

        self.network = network.eval()
        self.precision = precision
        self.threads = threads
        self._core = ov.Core()
        self._converted: dict[tuple[int, ...], object] = {}  # (C, *S) -> converted model, batch dynamic
        # ((B, C, *S), extra plugin settings) -> compiled model, batch fixed
        self._compiled: dict[tuple[tuple[int, ...], tuple[tuple[str, str], ...]], object] = {}
        self._digest = None if weights is None else sha256_file(weights)
        self._cache = None if weights is None else _cache_root(weights)  # converted models; compiled ones below it
        # neighborhood attention as one compiled operation where it builds (bundle.openvino_kernels), before any
        # model is read or compiled: a converted or compiled model holding it needs it registered
        self._kernels = kernel_library() if holds_window_attention(self.network) else None
        if self._kernels is not None:
            self._core.add_extension(str(self._kernels))

    def _convert(self, example: torch.Tensor, partial):
        import openvino as ov

        if self._kernels is None:
            return ov.convert_model(self.network, example_input=example, input=[partial])
        return convert_with_kernels(self.network, self._kernels, example_input=example, input=[partial])

    def _model_for(self, shape: tuple[int, ...]):
        import openvino as ov

        example = torch.zeros((1, *shape))
        partial = ov.PartialShape([-1, *shape])
        if self._digest is None:
            return self._convert(example, partial)
        kernels = "graph" if self._kernels is None else f"k{self._kernels.parent.name[:8]}"
        name = (f"{self._digest[:16]}_{network_code_digest()[:8]}_{'x'.join(map(str, shape))}"
                f"_ov{ov.__version__.split('-')[0]}_{kernels}")
        xml = self._cache / f"{name}.xml"
        if xml.is_file() and xml.with_suffix(".bin").is_file():
            logger.info("OpenVINO model from the cache: %s", xml)
            return self._core.read_model(xml)
        logger.info("converting the network to OpenVINO for input %s (cached as %s; OpenVINO's converter sends usage "
                    "telemetry to Intel unless this account has opted out with `opt_in_out --opt_out`)", shape, xml)
        model = self._convert(example, partial)
        with tempfile.TemporaryDirectory(dir=xml.parent, prefix=".converting") as tmp:
            ov.save_model(model, Path(tmp) / xml.name, compress_to_fp16=False)
            shutil.move(str(Path(tmp) / xml.with_suffix(".bin").name), xml.with_suffix(".bin"))
            shutil.move(str(Path(tmp) / xml.name), xml)  # the .xml last: its presence means both are whole
        # read back, so this process compiles the model later processes read (the compiled cache is keyed by it)
        return self._core.read_model(xml)

    def compiled_for(self, shape: tuple[int, ...], plugin_config: dict[str, str] | None = None):
        """The compiled model (``openvino.CompiledModel``) for a full input shape (batch included): the converted
        model of its (C, *S) with the batch fixed, since the CPU plugin runs a static shape faster than a dynamic
        batch. Compiled on first use, then kept. ``plugin_config``: further CPU plugin settings for this compiled
        model (e.g. ``{"PERF_COUNT": "YES"}`` for per-node times, as ``bundle.benchmark.openvino_profile`` asks); the
        conversion is shared with the compiled models without them."""
        key = (shape, tuple(sorted((plugin_config or {}).items())))
        if key not in self._compiled:
            import openvino as ov

            if shape[1:] not in self._converted:
                self._converted[shape[1:]] = self._model_for(shape[1:])
            model = self._converted[shape[1:]].clone()
            model.reshape(ov.PartialShape(list(shape)))
            config = {"INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
                      "INFERENCE_NUM_THREADS": self.threads or torch.get_num_threads(), **dict(key[1])}
            if self._cache is not None:  # compiled models are cached too: a later process imports them
                config["CACHE_DIR"] = str(self._cache / "compiled")
            self._compiled[key] = self._core.compile_model(model, "CPU", config)
        return self._compiled[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type != "cpu":
            raise ValueError(f"the OpenVINO runtime runs on the CPU; got a tensor on {x.device}.")
        batch = x.shape[0]
        bucket = batch_bucket(batch)
        x = x.detach().float()
        if bucket != batch:  # zero slices fill the batch up to its bucket; their outputs are dropped
            x = torch.cat([x, x.new_zeros((bucket - batch, *x.shape[1:]))])
        compiled = self.compiled_for(tuple(x.shape))
        result = compiled(x.contiguous().numpy())[0]
        return torch.from_numpy(result[:batch].copy())


def batch_bucket(batch: int) -> int:
    """The batch size OpenVINO runs ``batch`` inputs at: the next power of two (1, 2, 4, 8, 16, ...), so that a
    process compiles a handful of fixed-batch models, not one per remainder of a volume's slices."""
    if batch < 1:
        raise ValueError(f"a batch needs at least one input, got {batch}.")
    return 1 << (batch - 1).bit_length()


def runtime_network(network: nn.Module, runtime: str = "torch", precision: str = "fp32",
                    weights: str | os.PathLike | None = None, device: torch.device | None = None,
                    threads: int | None = None) -> nn.Module:
    """``network`` (deployed, eval mode) as ``runtime`` / ``precision`` run it: for torch fp32 itself on CUDA and, on
    the CPU, :func:`bundle.networks.onednn.cpu_inference_network` of it (a 2D LM-Net on oneDNN kernels with pre-packed
    weights and fused activations, the same function; other networks: themselves); under CPU bfloat16 autocast for
    torch bf16; an :class:`OpenVINONetwork` for openvino (with ``weights`` naming its
    cache and ``threads`` its CPU threads).

    Raises:
        ValueError: an unknown runtime or precision, or openvino / bf16 asked for on a CUDA device (use ``amp``).
        ImportError: openvino is not installed.
    """
    check_runtime(runtime, precision)
    on_cuda = device is not None and torch.device(device).type == "cuda"
    if on_cuda and (runtime != "torch" or precision != "fp32"):
        raise ValueError(f"runtime {runtime!r} / precision {precision!r} are CPU settings; on CUDA use runtime "
                         "'torch', precision 'fp32' and the amp setting for fp16.")
    if (runtime, precision) == ("torch", "fp32"):
        if on_cuda:
            return network
        from .networks.onednn import cpu_inference_network

        return cpu_inference_network(network)
    logger.info("inference runtime %s, precision %s", runtime, precision)
    if runtime == "openvino":
        return OpenVINONetwork(network, precision, weights, threads)
    warn_unless_native_bf16("inference precision bf16")
    return _TorchBF16(network)


class RuntimeHandler:
    """At ``STARTED`` (attach it after the ``CheckpointLoader`` and the ``ReparameterizeHandler``), replace the
    evaluator's network by :func:`runtime_network` of it (with runtime torch and precision fp32: on CUDA the network
    itself, on the CPU its oneDNN form, the same function)."""

    def __init__(self, runtime: str = "torch", precision: str = "fp32", weights: str | os.PathLike | None = None,
                 device: torch.device | str | None = None) -> None:
        check_runtime(runtime, precision)
        self.runtime, self.precision, self.weights, self.device = runtime, precision, weights, device

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self)

    def __call__(self, engine) -> None:
        engine.network = runtime_network(engine.network, self.runtime, self.precision, self.weights or None,
                                         self.device)
