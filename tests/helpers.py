"""Shared test helpers."""

from __future__ import annotations

import functools

import torch
import torch.nn as nn


def randomize_batchnorm(model: nn.Module, seed: int = 0) -> nn.Module:
    """Give every batch norm non-trivial running statistics and affine parameters (a fresh BN is an identity in
    eval mode and would hide fusion bugs). Returns ``model``."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.5)
                m.running_var.copy_(torch.rand(n, generator=gen) * 1.5 + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.2)
    return model


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@functools.lru_cache
def lesion_logit(task: str = "lgg") -> float:
    """The lesion-minus-background logit at which the task's inference config starts calling a voxel lesion:
    ``log(t / (1 - t))`` for its ``lesion_threshold`` t (0 for argmax). Test networks with a random head centre
    their logits there, so that about half of the voxels are lesion whatever the task's threshold."""
    import math

    from bundle.config import bundle_parser
    from tests.conftest import ROOT

    threshold = float(bundle_parser(ROOT, task, "inference").get_parsed_content("lesion_threshold"))
    return math.log(threshold / (1.0 - threshold))


def config_segmenter(network: nn.Module, task: str = "lgg", **overrides):
    """A :class:`bundle.segmenter.Segmenter` with the pipeline of the bundle's inference config for ``task`` (plus
    ``overrides``: config id -> value) around a copy of ``network`` as it is (no weights loaded; the copy is
    re-parameterized by the segmenter when it is an LM-Net). ``context_slices`` is 0 unless given: the test networks
    take one slice (the config would read it from the shipped weights, which take three)."""
    import copy

    from bundle.config import bundle_parser
    from bundle.segmenter import Segmenter
    from tests.conftest import ROOT

    parser = bundle_parser(ROOT, task, "inference", {"device": "$torch.device('cpu')", "context_slices": 0,
                                                     **overrides})
    pieces = {name: parser.get_parsed_content(name) for name in
              ("image_transforms", "inferer", "score_transforms", "label_transforms")}
    return Segmenter(copy.deepcopy(network), None, device="cpu", amp=False, **pieces)


def checked_workflow(files: list[str], workflow_type: str, **overrides):
    """An initialized ``ConfigWorkflow`` of the bundle's ``configs/<files>`` (overrides: config id -> value), with
    no required property missing (``check_properties``)."""
    from monai.bundle import ConfigWorkflow

    from tests.conftest import ROOT

    configs = ROOT / "configs"
    wf = ConfigWorkflow(config_file=[str(configs / f) for f in files], meta_file=str(configs / "metadata.json"),
                        logging_file=str(configs / "logging.conf"), workflow_type=workflow_type,
                        bundle_root=str(ROOT), **overrides)
    wf.initialize()
    assert wf.check_properties() == []
    return wf


def run_workflow(files: list[str], workflow_type: str, **overrides):
    """Initialize, check (:func:`checked_workflow`), run and finalize a ``ConfigWorkflow`` of the bundle's
    ``configs/<files>``; returns the workflow."""
    wf = checked_workflow(files, workflow_type, **overrides)
    wf.run()
    wf.finalize()
    return wf
