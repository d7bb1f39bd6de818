"""Compiled OpenVINO operations for LM-Net's traced graph: neighborhood attention as one CPU operation.

A traced 2D LFT layer computes its attention through :class:`bundle.networks.blocks.neighborhood_attention.
WindowAttention2D`. Expressed in OpenVINO's own operations, that is a slice, two products, a matrix product and an add
per window offset, each a pass over a full-size map; :file:`neighborhood_attention.cpp` computes it instead as one
operation (``NeighborhoodAttention2D``, float32) that keeps each pixel's logits, softmax and weighted sums in
registers and writes only its output. The same function: the tests compare it with the eager attention.

The operation is compiled here, on first use, with the machine's C++ compiler (``$CXX``, else ``c++`` / ``g++``)
against the headers and libraries of the installed ``openvino`` package, for this CPU (``-march=native``), and the
shared library is cached by a digest of the source, the OpenVINO version, the compiler and the CPU
(``$LMNET_CACHE_DIR/openvino_kernels`` or ``~/.cache/lmnet/openvino_kernels``), so the build (a few seconds) happens
once. Where it cannot be built (no compiler, not Linux) or ``LMNET_OPENVINO_KERNELS=0`` is set, the
OpenVINO runtime converts the attention into OpenVINO's own operations as before, with a logged note.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from ..networks.blocks.neighborhood_attention import WindowAttention2D

__all__ = ["KERNEL_OP", "OP_TYPE", "kernel_library", "holds_window_attention", "convert_with_kernels",
           "kernels_requested"]

logger = logging.getLogger(__name__)

KERNEL_OP = "lmnet::neighborhood_attention_2d"  # the converter's name for the operation (the source registers it)
OP_TYPE = "NeighborhoodAttention2D"  # its OpenVINO type name (the source's OPENVINO_OP)
_SOURCE = Path(__file__).resolve().with_name("neighborhood_attention.cpp")
_LIBRARY_NAME = "libneighborhood_attention.so"
_BUILD_TIMEOUT_S = 300


def kernels_requested() -> bool:
    """Whether the compiled operations are wanted: ``LMNET_OPENVINO_KERNELS`` unset or anything but ``0``."""
    return os.environ.get("LMNET_OPENVINO_KERNELS", "1").strip() != "0"


def _compiler() -> str | None:
    for name in (os.environ.get("CXX"), "c++", "g++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def _cpu_identity() -> bytes:
    """The CPU model name and flags (Linux ``/proc/cpuinfo``): the library is built for this CPU."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor().encode()
    wanted = [line for line in lines if line.split(":")[0].strip() in ("model name", "flags")]
    return "\n".join(sorted(set(wanted))).encode()


def _openvino_paths() -> tuple[Path, Path, list[str], str]:
    """The installed ``openvino`` package's include folder, library folder, the libraries to link and its version."""
    import openvino as ov

    root = Path(ov.__file__).resolve().parent
    libs = root / "libs"
    core = sorted(libs.glob("libopenvino.so.*"))
    tbb = sorted(libs.glob("libtbb.so.*"))
    if not (root / "include").is_dir() or not core or not tbb:
        raise FileNotFoundError(f"the openvino package at {root} has no include/ folder or no libopenvino.so / "
                                "libtbb.so in libs/ (a wheel from PyPI has both)")
    return root / "include", libs, [f"-l:{core[0].name}", f"-l:{tbb[0].name}"], ov.__version__


def _cache_folder() -> Path:
    return Path(os.environ.get("LMNET_CACHE_DIR", Path.home() / ".cache" / "lmnet")) / "openvino_kernels"


@functools.cache
def kernel_library() -> Path | None:
    """The compiled operations' shared library, built on first call (see the module docstring); ``None`` where
    they are not requested or cannot be built here (the reason is logged once)."""
    if not kernels_requested():
        logger.info("LMNET_OPENVINO_KERNELS=0: the OpenVINO runtime converts neighborhood attention into OpenVINO's "
                    "own operations")
        return None
    if not sys.platform.startswith("linux"):
        logger.info("compiled OpenVINO operations are built on Linux only; the attention runs as OpenVINO operations")
        return None
    compiler = _compiler()
    if compiler is None:
        logger.warning("no C++ compiler ($CXX, c++, g++) found: the OpenVINO runtime runs neighborhood attention "
                       "as OpenVINO operations, slower; install g++ for the compiled operation")
        return None
    try:
        include, libs, link, version = _openvino_paths()
        compiler_version = subprocess.run([compiler, "--version"], capture_output=True, text=True,
                                          timeout=60).stdout
    except (ImportError, FileNotFoundError, OSError, subprocess.SubprocessError) as err:
        logger.warning("cannot build the compiled OpenVINO operation (%s): the attention runs as OpenVINO "
                       "operations", err)
        return None
    digest = hashlib.sha256()
    for part in (_SOURCE.read_bytes(), version.encode(), compiler_version.encode(), platform.machine().encode(),
                 _cpu_identity()):
        digest.update(part + b"\0")
    library = _cache_folder() / digest.hexdigest()[:16] / _LIBRARY_NAME
    if library.is_file():
        return library
    library.parent.mkdir(parents=True, exist_ok=True)
    command = [compiler, "-std=c++17", "-O3", "-march=native", "-shared", "-fPIC", f"-I{include}", str(_SOURCE),
               f"-L{libs}", *link, f"-Wl,-rpath,{libs}"]
    logger.info("building the compiled OpenVINO operation (once per OpenVINO version, compiler and CPU): %s",
                library)
    with tempfile.TemporaryDirectory(dir=library.parent, prefix=".building") as tmp:
        target = Path(tmp) / _LIBRARY_NAME
        try:
            done = subprocess.run([*command, "-o", str(target)], capture_output=True, text=True,
                                  timeout=_BUILD_TIMEOUT_S)
        except (OSError, subprocess.SubprocessError) as err:
            logger.warning("building %s failed (%s): the attention runs as OpenVINO operations", _SOURCE.name, err)
            return None
        if done.returncode != 0 or not target.is_file():
            logger.warning("building %s failed (exit %d): the attention runs as OpenVINO operations\n%s",
                           _SOURCE.name, done.returncode, done.stderr[-2000:])
            return None
        os.replace(target, library)  # atomic: another process sees the whole library or none
    return library


def _convert(module: torch.nn.Module, target_op, qkv: torch.Tensor, bias: torch.Tensor, kh: int, kw: int,
             scale: float) -> torch.Tensor:
    """What the converter records for a :class:`WindowAttention2D` call: the operation, on q/k/v, its settings and
    the projection bias (the operation's inputs 0, 1 and 2)."""
    return target_op(qkv, torch.tensor([float(kh), float(kw), float(scale)], dtype=torch.float32), bias)


def _evaluate(module: torch.nn.Module, qkv: torch.Tensor, settings: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """The operation's value while the converter traces (the module's own forward)."""
    return module(qkv, bias, int(settings[0]), int(settings[1]), float(settings[2]))


def holds_window_attention(network: torch.nn.Module) -> bool:
    """Whether ``network`` calls :class:`WindowAttention2D` when traced (a 2D LM-Net does), so the operation applies."""
    return any(isinstance(module, WindowAttention2D) for module in network.modules())


def convert_with_kernels(network: torch.nn.Module, library: Path, **convert_args):
    """``openvino.convert_model(network, **convert_args)`` with every :class:`WindowAttention2D` call recorded as the
    operation of ``library`` (:func:`kernel_library`), each node named after the module that feeds it
    (``__module.lft1/NeighborhoodAttention2D``), as the converter names its own nodes, so that a profile counts it
    there. The core that reads or compiles the result needs ``library`` (``Core.add_extension``)."""
    import openvino as ov
    from openvino.frontend.pytorch import ModuleExtension

    extension = ModuleExtension(WindowAttention2D, KERNEL_OP, evaluate=_evaluate, convert=_convert)
    # the converter patches the forward of every module an extension names and leaves it patched (OpenVINO 2026.4.1):
    # it converts a copy, so ``network`` runs as before
    model = ov.convert_model(copy.deepcopy(network), extension=[str(library), extension], **convert_args)
    taken: set[str] = set()
    for op in model.get_ops():
        if op.get_type_name() == OP_TYPE:
            name = op.input_value(0).get_node().get_friendly_name().split("/")[0] + "/" + OP_TYPE
            while name in taken:  # two attention layers in one module
                name += "_"
            taken.add(name)
            op.set_friendly_name(name)
    return model
