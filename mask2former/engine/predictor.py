"""Predictions from Python: ``Predictor(cfg)(image)``."""

from __future__ import annotations

import os
from typing import Sequence, Union

import numpy as np
import torch

from mask2former.checkpoint import DetectionCheckpointer
from mask2former.data.catalog import MetadataCatalog
from mask2former.data.dataset_mappers import TestDatasetMapper
from mask2former.data.detection_utils import read_image
from mask2former.modeling import build_model

from .defaults import model_kwargs_from_metadata

ImageInput = Union[str, os.PathLike, np.ndarray, "PIL.Image.Image"]  # noqa: F821


class Predictor:
    """A model in eval mode with ``MODEL.WEIGHTS`` loaded, applied to single images.

    Takes an image as a path, an (H, W, 3) uint8 array in ``INPUT.FORMAT`` channel order,
    or a PIL image; applies the test-time resize (``INPUT.MIN_SIZE_TEST`` /
    ``MAX_SIZE_TEST``) and returns the model's outputs at the original size.

    Example::

        cfg = get_cfg(); cfg.merge_from_file("configs/shapes/mask2former_R18_quick.yaml")
        predictor = Predictor(cfg)
        panoptic_seg, segments_info = predictor("image.png")["panoptic_seg"]
    """

    def __init__(self, cfg):
        self.cfg = cfg.clone()
        self.model = build_model(self.cfg, **model_kwargs_from_metadata(self.cfg)).eval()
        if self.cfg.MODEL.WEIGHTS:
            DetectionCheckpointer(self.model).load(self.cfg.MODEL.WEIGHTS)
        test_sets = self.cfg.DATASETS.TEST
        self.metadata = MetadataCatalog.get(test_sets[0]) if len(test_sets) else None
        self.input_format = self.cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be RGB or BGR, got {self.input_format!r}")
        self.test_mapper = TestDatasetMapper(self.cfg)

    def __call__(self, image: ImageInput) -> dict:
        """Outputs for one image: "sem_seg", "panoptic_seg" and/or "instances"."""
        return self.predict_batch([image])[0]

    def predict_batch(self, images: Sequence[ImageInput]) -> list[dict]:
        """Outputs for several images, run through the model as one batch."""
        inputs = [self.preprocess(image) for image in images]
        with torch.inference_mode():
            return self.model(inputs)

    def preprocess(self, image: ImageInput) -> dict:
        """The model's input dict, as the test-time mapper makes it: the resized (3, h, w)
        image plus the original size."""
        return self.test_mapper.map_image(self.to_array(image))

    def to_array(self, image: ImageInput) -> np.ndarray:
        """An (H, W, 3) uint8 array in ``INPUT.FORMAT`` order."""
        if isinstance(image, (str, os.PathLike)):
            return read_image(os.fspath(image), format=self.input_format)
        if isinstance(image, np.ndarray):
            if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
                raise ValueError(
                    f"a numpy image must be (H, W, 3) uint8 in {self.input_format} order, "
                    f"got shape {image.shape} and dtype {image.dtype}"
                )
            return image
        from PIL import Image

        if isinstance(image, Image.Image):
            rgb = np.asarray(image.convert("RGB"))
            return rgb if self.input_format == "RGB" else rgb[:, :, ::-1].copy()
        raise TypeError(f"Predictor takes a path, a numpy array or a PIL image, got {type(image)}")


DefaultPredictor = Predictor
