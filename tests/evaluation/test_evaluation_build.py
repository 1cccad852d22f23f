"""build_evaluator: the published evaluator_type mapping, gated by TEST.*_ON flags."""

import pytest
from eval_helpers import unique_name

import mask2former.evaluation.build as build
from mask2former.config import get_cfg
from mask2former.data.catalog import MetadataCatalog
from mask2former.evaluation import DatasetEvaluator, DatasetEvaluators, build_evaluator


@pytest.fixture()
def fake_evaluators(monkeypatch):
    """Replace every evaluator class in build.py by a stub that records its kind."""

    def stub(kind):
        class Stub(DatasetEvaluator):
            def __init__(self, dataset_name, *args, **kwargs):
                self.kind = kind

        return Stub

    for cls in (
        "SemSegEvaluator",
        "COCOEvaluator",
        "COCOPanopticEvaluator",
        "CityscapesSemSegEvaluator",
        "CityscapesInstanceEvaluator",
        "LVISEvaluator",
    ):
        monkeypatch.setattr(build, cls, stub(cls))


def _kinds(evaluator_type, semantic=False, instance=False, panoptic=False):
    name = unique_name("build")
    MetadataCatalog.get(name).set(evaluator_type=evaluator_type)
    cfg = get_cfg()
    cfg.MODEL.MASK_FORMER.TEST.SEMANTIC_ON = semantic
    cfg.MODEL.MASK_FORMER.TEST.INSTANCE_ON = instance
    cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON = panoptic
    try:
        ev = build_evaluator(cfg, name, "/tmp/out")
    finally:
        MetadataCatalog.remove(name)
    evaluators = ev._evaluators if isinstance(ev, DatasetEvaluators) else [ev]
    return sorted(e.kind for e in evaluators)


ALL = dict(semantic=True, instance=True, panoptic=True)


@pytest.mark.parametrize(
    "evaluator_type, flags, expected",
    [
        ("sem_seg", {}, ["SemSegEvaluator"]),
        ("coco", {}, ["COCOEvaluator"]),
        ("coco_panoptic_seg", dict(panoptic=True), ["COCOPanopticEvaluator"]),
        ("coco_panoptic_seg", ALL, ["COCOEvaluator", "COCOPanopticEvaluator", "SemSegEvaluator"]),
        ("coco_panoptic_seg", dict(instance=True), ["COCOEvaluator"]),
        ("ade20k_panoptic_seg", dict(panoptic=True), ["COCOPanopticEvaluator", "SemSegEvaluator"]),
        ("ade20k_panoptic_seg", ALL, ["COCOEvaluator", "COCOPanopticEvaluator", "SemSegEvaluator"]),
        (
            "mapillary_vistas_panoptic_seg",
            dict(panoptic=True, semantic=True),
            ["COCOPanopticEvaluator", "SemSegEvaluator"],
        ),
        ("cityscapes_sem_seg", {}, ["CityscapesSemSegEvaluator"]),
        ("lvis", {}, ["LVISEvaluator"]),
        ("cityscapes_instance", {}, ["CityscapesInstanceEvaluator"]),
        (
            "cityscapes_panoptic_seg",
            ALL,
            ["COCOPanopticEvaluator", "CityscapesInstanceEvaluator", "CityscapesSemSegEvaluator"],
        ),
    ],
)
def test_published_mapping(fake_evaluators, evaluator_type, flags, expected):
    assert _kinds(evaluator_type, **flags) == sorted(expected)


def test_unknown_type_and_nothing_to_evaluate(fake_evaluators):
    with pytest.raises(
        KeyError, match="registered names: ade20k_panoptic_seg, cityscapes_instance"
    ):
        _kinds("objects365")
    with pytest.raises(ValueError, match="TEST.\\*_ON"):
        _kinds("coco_panoptic_seg")


def test_every_exported_name_resolves():
    import mask2former.evaluation as evaluation
    from mask2former.structures.rle import encode_masks

    for name in evaluation.__all__:
        assert getattr(evaluation, name) is not None, name
    assert evaluation.encode_masks is encode_masks
