"""MONAI Label inference task of one bundle task: the bundle's own ``inference.json`` pieces, strictly loaded
weights, and label files the viewers open.

What differs from MONAI Label's stock ``BundleInferTask``:

- weights load strictly (a key mismatch is an error, never a silently random network), shipped weights are checked
  against the digest in the metadata, and the network runs re-parameterized, as ``monai.bundle run`` does;
- fine-tuned weights (``ModelSpec.finetuned``) are served as soon as a training run publishes them;
- the label has no channel dimension: a 2D image gets a PNG of class indices with the source's rows and columns,
  a volume (NIfTI, NRRD, a DICOM series folder) a NIfTI with the source affine;
- ``SaveLabeld`` of the bundle's postprocessing is dropped (the server returns the label instead).
"""

from __future__ import annotations

import copy
import logging
import os
import tempfile
import threading
from typing import Any

import numpy as np
import torch
from monai.bundle import ConfigParser
from monai.data import MetaTensor, NibabelWriter
from monai.transforms import SaveImaged, SqueezeDimd
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from PIL import Image

from ..networks.ensemble import network_for_weights
from ..segmenter import deployed_network
from ..transforms import SaveLabeld
from .spec import ModelSpec

__all__ = ["LMNetInferTask", "write_label"]

logger = logging.getLogger(__name__)


def write_label(label: np.ndarray, affine: np.ndarray | None) -> str:
    """Write a label map without channel dimension to a temporary file: (H, W) as a PNG of class indices,
    (H, W, D) as a NIfTI with ``affine``. Returns the path (the server removes it after answering)."""
    label = np.asarray(label).astype(np.uint8)
    if label.ndim == 2:
        path = tempfile.NamedTemporaryFile(suffix=".png", delete=False).name
        Image.fromarray(label).save(path)
        return path
    if label.ndim != 3:
        raise ValueError(f"expected a 2D (H, W) or 3D (H, W, D) label map, got shape {label.shape}.")
    path = tempfile.NamedTemporaryFile(suffix=".nii.gz", delete=False).name
    writer = NibabelWriter(output_dtype=np.uint8)
    writer.set_data_array(label, channel_dim=None)
    affine = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    writer.set_metadata({"affine": affine, "original_affine": affine}, resample=False)
    writer.write(path, verbose=False)
    return path


class LMNetInferTask(BasicInferTask):
    """Segmentation with one task of the bundle (``spec``), for MONAI Label.

    Args:
        spec: the model (configs, weights, labels) from :func:`bundle.monailabel.spec.model_specs`.
        preload: load the network at start-up instead of at the first request.
        overrides: settings of the inference configs (config id -> value), as on ``monai.bundle run``'s command line.
    """

    def __init__(self, spec: ModelSpec, preload: bool = False, overrides: dict | None = None) -> None:
        self.spec = spec
        self._parser = ConfigParser()
        self._parser.read_config([str(p) for p in spec.inference_configs])
        self._parser["bundle_root"] = str(spec.bundle_root)
        for key, value in (overrides or {}).items():
            self._parser[key] = value
        self._lock = threading.RLock()  # the parsed transforms are shared between requests
        super().__init__(
            path=[str(spec.weights), str(spec.finetuned)],  # the last one that exists is served
            network=None,
            type=InferType.SEGMENTATION,
            labels=spec.labels,
            dimension=spec.dimension,
            description=spec.description,
            load_strict=True,
            preload=preload,
        )

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["weights"] = self.get_path()
        return info

    def _component(self, name: str) -> Any:
        """One instantiated component of the inference configs (instantiated once, so ``Invertd`` in the
        postprocessing refers to the very preprocessing transforms that ran)."""
        return self._parser.get_parsed_content(name)

    def __call__(self, request, callbacks=None):
        with self._lock:
            return super().__call__(request, callbacks)

    def pre_transforms(self, data=None):
        return list(self._component("preprocessing").transforms)

    def inferer(self, data=None):
        return self._component("inferer")

    def post_transforms(self, data=None):
        kept = [t for t in self._component("postprocessing").transforms if not isinstance(t, (SaveLabeld, SaveImaged))]
        return [*kept, SqueezeDimd(keys=self.output_label_key, dim=0)]

    def _get_network(self, device, data):
        path = self.get_path()
        if path is None:
            raise FileNotFoundError(f"{self.spec.name}: neither {self.spec.weights} nor {self.spec.finetuned} exists.")
        mtime = os.stat(path).st_mtime
        cached = self._networks.get(device)
        if cached and cached[1] == mtime and cached[2] == path:
            return cached[0]
        # a copy of the config's network_def (the parsed one stays untouched: re-parsing the config would make new
        # transforms, which Invertd would not recognise) for every weights file (an ensemble of copies for an
        # ensemble file), loaded strictly, re-parameterized
        network = network_for_weights(copy.deepcopy(self._component("network_def")), path)
        network = deployed_network(network, path, torch.device(device))
        logger.info("%s: serving weights %s on %s", self.spec.name, path, device)
        self._networks[device] = (network, mtime, path)
        return network

    def writer(self, data, extension=None, dtype=None):
        label = data[self.output_label_key]
        affine = label.affine.numpy() if isinstance(label, MetaTensor) and label.ndim == 3 else None
        array = label.detach().cpu().numpy() if torch.is_tensor(label) else np.asarray(label)
        return write_label(array, affine), data.get(self.output_json_key, {})
