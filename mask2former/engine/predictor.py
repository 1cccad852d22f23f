"""Predictions from Python: ``DefaultPredictor(cfg)(image)``, detectron2's predictor."""

from __future__ import annotations

import os
from typing import Sequence, Union

import numpy as np
import torch

from mask2former.checkpoint import DetectionCheckpointer
from mask2former.config import CfgNode
from mask2former.data import transforms as T
from mask2former.data.catalog import MetadataCatalog
from mask2former.data.datasets import register_folders
from mask2former.data.detection_utils import read_image
from mask2former.modeling import build_model
from mask2former.modeling.meta_arch import MaskFormer

from .model_kwargs import model_kwargs_from_metadata

__all__ = ["DefaultPredictor", "Predictor"]

ImageInput = Union[str, os.PathLike, np.ndarray, "PIL.Image.Image"]  # noqa: F821


class DefaultPredictor:
    """A model in eval mode with ``MODEL.WEIGHTS`` loaded, applied to single images.

    detectron2's ``DefaultPredictor``: a numpy image is an (H, W, 3) uint8 array in **BGR**
    order (what OpenCV reads), whatever ``INPUT.FORMAT`` is; it is flipped to RGB when the
    model takes RGB. Also accepted: a path (read with EXIF orientation applied) and a PIL
    image. The image is resized with ``ResizeShortestEdge([MIN_SIZE_TEST, MIN_SIZE_TEST],
    MAX_SIZE_TEST)`` (``self.aug``), and the outputs come back at the original size
    ("height" / "width" of the input), computed under ``torch.no_grad()``.

    Attributes as in detectron2: ``cfg``, ``model``, ``metadata`` (of ``DATASETS.TEST[0]``,
    or None), ``aug``, ``input_format``.

    ``low_memory=True`` (what the demo uses) computes a ``MaskFormer``'s outputs at the
    original size a band of columns at a time (``MaskFormer.low_memory_inference``): the
    same outputs, with instance ``pred_masks`` as bool, in a fraction of the memory on large
    images (see ``benchmarks/demo_memory.py``).

    Example::

        cfg = get_cfg(); cfg.merge_from_file("configs/shapes/mask2former_R18_quickstart.yaml")
        predictor = DefaultPredictor(cfg)
        panoptic_seg, segments_info = predictor(cv2.imread("image.png"))["panoptic_seg"]
    """

    def __init__(self, cfg: CfgNode, *, low_memory: bool = False):
        self.cfg = cfg.clone()
        register_folders(self.cfg.DATASETS.FOLDERS)  # for the metadata of DATASETS.TEST
        self.model = build_model(self.cfg, **model_kwargs_from_metadata(self.cfg)).eval()
        if low_memory and isinstance(self.model, MaskFormer):
            # (the other meta-architectures resize only what they output: nothing to save)
            self.model.low_memory_inference = True
        if self.cfg.MODEL.WEIGHTS:
            DetectionCheckpointer(self.model).load(self.cfg.MODEL.WEIGHTS)
        test_sets = self.cfg.DATASETS.TEST
        self.metadata = MetadataCatalog.get(test_sets[0]) if len(test_sets) else None
        self.input_format = self.cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be RGB or BGR, got {self.input_format!r}")
        min_size = self.cfg.INPUT.MIN_SIZE_TEST
        self.aug = T.ResizeShortestEdge([min_size, min_size], self.cfg.INPUT.MAX_SIZE_TEST)

    def __call__(self, original_image: ImageInput) -> dict:
        """Outputs for one image: "sem_seg", "panoptic_seg" and/or "instances"."""
        return self.predict_batch([original_image])[0]

    def predict_batch(self, images: Sequence[ImageInput]) -> list[dict]:
        """Outputs for several images, run through the model as one batch."""
        with torch.no_grad():
            return self.model([self.preprocess(image) for image in images])

    def preprocess(self, image: ImageInput) -> dict:
        """The model's input: "image" (3, h, w) float32 in INPUT.FORMAT, resized by
        ``self.aug``, on MODEL.DEVICE; "height" / "width" of the original image."""
        array = self.to_model_format(image)
        height, width = array.shape[:2]
        resized = self.aug.get_transform(array).apply_image(array)
        tensor = torch.as_tensor(np.ascontiguousarray(resized.astype("float32").transpose(2, 0, 1)))
        return {"image": tensor.to(self.cfg.MODEL.DEVICE), "height": height, "width": width}

    def to_model_format(self, image: ImageInput) -> np.ndarray:
        """An (H, W, 3) uint8 array in ``INPUT.FORMAT`` order from a BGR array, path or PIL."""
        if isinstance(image, (str, os.PathLike)):
            return read_image(os.fspath(image), format=self.input_format)
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(
                    "a numpy image must be (H, W, 3) uint8 in BGR order, "
                    f"got shape {image.shape} and dtype {image.dtype}"
                )
            return np.ascontiguousarray(image[:, :, ::-1]) if self.input_format == "RGB" else image
        from PIL import Image

        if isinstance(image, Image.Image):
            rgb = np.asarray(image.convert("RGB"))
            return rgb if self.input_format == "RGB" else np.ascontiguousarray(rgb[:, :, ::-1])
        raise TypeError(
            f"DefaultPredictor takes a path, a BGR numpy array or a PIL image, got {type(image)}"
        )


Predictor = DefaultPredictor
"""The name this package used first; the same class."""
