"""``InstanceSegEvaluator``: official Mask2Former's mask AP evaluator for panoptic datasets."""

from __future__ import annotations

from mask2former.evaluation.coco_evaluation import COCOEvaluator

__all__ = ["InstanceSegEvaluator"]


class InstanceSegEvaluator(COCOEvaluator):
    """Mask AP ("segm") of a panoptic dataset's things (ADE20K, Mapillary Vistas, COCO).

    Official Mask2Former needs this subclass of detectron2's ``COCOEvaluator`` because there
    the thing classes' contiguous ids must be 0..K-1, while on ADE20K / Mapillary panoptic
    they are scattered over all classes. Our :class:`COCOEvaluator` already maps every
    contiguous id listed in ``thing_dataset_id_to_contiguous_id`` back to its dataset id, so
    this class adds nothing; it exists under the official name and module path
    (``mask2former.evaluation.instance_evaluation``). Same arguments:
    ``InstanceSegEvaluator(dataset_name, distributed=True, output_dir=None)``.
    """
