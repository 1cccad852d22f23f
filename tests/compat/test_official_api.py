"""The names official Mask2Former / MaskFormer scripts import, at their mirrored paths, and
the detectron2 behaviours those scripts rely on."""

from __future__ import annotations

import importlib
import json
import logging
import math
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import mask2former
from mask2former.config import CfgNode, ConfigError, get_cfg
from mask2former.engine import DefaultTrainer
from mask2former.evaluation import (
    COCOEvaluator,
    DatasetEvaluator,
    DatasetEvaluators,
    InstanceSegEvaluator,
    LVISEvaluator,
    split_by_outputs,
    verify_results,
)
from mask2former.projects.deeplab import (
    DEEPLAB_KEYS,
    WarmupPolyLR,
    add_deeplab_config,
    build_lr_scheduler,
)
from mask2former.solver.build import maybe_add_gradient_clipping

REPO = Path(__file__).resolve().parents[2]

# module -> names imported from it by official train_net.py, demo/demo.py, demo/predictor.py
# (Mask2Former and MaskFormer) and by detectron2-style custom components.
OFFICIAL_IMPORTS = {
    "mask2former.utils.comm": ["get_rank", "get_world_size", "is_main_process", "synchronize"],
    "mask2former.checkpoint": ["DetectionCheckpointer"],
    "mask2former.config": ["get_cfg", "CfgNode", "configurable"],
    "mask2former.data": [
        "MetadataCatalog",
        "DatasetCatalog",
        "build_detection_train_loader",
        "build_detection_test_loader",
    ],
    "mask2former.data.detection_utils": ["read_image"],
    "mask2former.engine": [
        "DefaultTrainer",
        "DefaultPredictor",
        "default_argument_parser",
        "default_setup",
        "launch",
        "hooks",
    ],
    "mask2former.engine.defaults": ["DefaultPredictor", "DefaultTrainer"],
    "mask2former.evaluation": [
        "CityscapesInstanceEvaluator",
        "CityscapesSemSegEvaluator",
        "COCOEvaluator",
        "COCOPanopticEvaluator",
        "DatasetEvaluators",
        "DatasetEvaluator",
        "LVISEvaluator",
        "SemSegEvaluator",
        "verify_results",
        "inference_on_dataset",
    ],
    "mask2former.evaluation.instance_evaluation": ["InstanceSegEvaluator"],
    "mask2former.projects.deeplab": ["add_deeplab_config", "build_lr_scheduler"],
    "mask2former.projects.point_rend": ["ColorAugSSDTransform"],
    "mask2former.solver.build": ["maybe_add_gradient_clipping"],
    "mask2former.utils.logger": ["setup_logger"],
    "mask2former.utils.visualizer": ["Visualizer", "ColorMode"],
    "mask2former.utils.video_visualizer": ["VideoVisualizer"],
    "mask2former.modeling": [
        "BACKBONE_REGISTRY",
        "Backbone",
        "ShapeSpec",
        "META_ARCH_REGISTRY",
        "SEM_SEG_HEADS_REGISTRY",
        "build_backbone",
        "build_sem_seg_head",
        "build_model",
    ],
    "mask2former.modeling.backbone": ["Backbone"],
    "mask2former.layers": ["ShapeSpec", "Conv2d", "get_norm"],
    "mask2former": [
        "add_maskformer2_config",
        "add_mask_former_config",
        "COCOInstanceNewBaselineDatasetMapper",
        "COCOPanopticNewBaselineDatasetMapper",
        "MaskFormerInstanceDatasetMapper",
        "MaskFormerPanopticDatasetMapper",
        "MaskFormerSemanticDatasetMapper",
        "DETRPanopticDatasetMapper",
        "InstanceSegEvaluator",
        "SemanticSegmentorWithTTA",
        "MaskFormer",
    ],
}


@pytest.mark.parametrize("module_name", sorted(OFFICIAL_IMPORTS))
def test_official_names_exist_at_their_mirrored_paths(module_name):
    module = importlib.import_module(module_name)
    missing = [n for n in OFFICIAL_IMPORTS[module_name] if getattr(module, n, None) is None]
    assert not missing, f"{module_name} lacks {missing}"


def test_top_level_names_are_the_package_classes():
    from mask2former.data import dataset_mappers
    from mask2former.engine import SemanticSegmentorWithTTA
    from mask2former.engine.defaults import DefaultPredictor

    assert mask2former.DefaultPredictor is DefaultPredictor is mask2former.Predictor
    assert mask2former.SemanticSegmentorWithTTA is SemanticSegmentorWithTTA
    assert mask2former.InstanceSegEvaluator is InstanceSegEvaluator
    assert mask2former.add_mask_former_config is mask2former.add_maskformer2_config
    for name in ("MaskFormerSemanticDatasetMapper", "MaskFormerPanopticDatasetMapper"):
        assert getattr(mask2former, name) is getattr(dataset_mappers, name)
    assert set(mask2former.__all__) <= set(dir(mask2former))
    with pytest.raises(AttributeError, match="has no attribute 'NoSuchThing'"):
        mask2former.NoSuchThing


def test_importing_the_package_stays_cheap():
    code = (
        "import sys, mask2former\n"
        "heavy = [m for m in ('torch', 'mask2former.data', 'mask2former.modeling') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
        "from mask2former import add_maskformer2_config\n"
        "assert 'mask2former.modeling' not in sys.modules\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# --------------------------------------------------------------------------- #
# add_deeplab_config / add_maskformer2_config
# --------------------------------------------------------------------------- #
def test_add_config_functions_keep_every_value_of_our_cfg():
    cfg = get_cfg()
    cfg.SOLVER.POLY_LR_POWER = 0.5
    cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES = 7
    before = cfg.dump()
    add_deeplab_config(cfg)
    mask2former.add_maskformer2_config(cfg)
    assert cfg.dump() == before


def test_add_config_functions_fill_in_missing_keys_with_our_defaults():
    cfg = get_cfg()
    del cfg.MODEL["MASK_FORMER"]
    del cfg.SOLVER["POLY_LR_POWER"]
    cfg.MODEL.SWIN.DEPTHS = [1, 1, 1, 1]  # set by the user before the call
    add_deeplab_config(cfg)
    assert cfg.SOLVER.POLY_LR_POWER == 0.9 and "MASK_FORMER" not in cfg.MODEL
    mask2former.add_maskformer2_config(cfg)
    assert (
        cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == get_cfg().MODEL.MASK_FORMER.NUM_OBJECT_QUERIES
    )
    assert cfg.MODEL.SWIN.DEPTHS == [1, 1, 1, 1]
    assert cfg.dump().replace("DEPTHS:\n    - 1\n    - 1\n    - 1\n    - 1", "") != ""


def test_add_deeplab_config_adds_only_the_keys_our_code_reads():
    cfg = CfgNode()
    add_deeplab_config(cfg)
    leaves = [f"{a}.{b}" for a in cfg for b in cfg[a] if not isinstance(cfg[a][b], CfgNode)]
    leaves += [f"{a}.{b}.{c}" for a in cfg for b in cfg[a] if isinstance(cfg[a][b], CfgNode)
               for c in cfg[a][b]]  # fmt: skip
    assert sorted(leaves) == sorted(DEEPLAB_KEYS)
    assert "ASPP_CHANNELS" not in get_cfg().MODEL.SEM_SEG_HEAD


def test_add_config_on_a_frozen_cfg():
    cfg = get_cfg()
    cfg.freeze()
    mask2former.add_maskformer2_config(cfg)  # nothing missing: nothing to do
    cfg.defrost()
    del cfg.SOLVER["POLY_LR_POWER"]
    cfg.freeze()
    with pytest.raises(ConfigError, match="frozen config.*SOLVER.POLY_LR_POWER"):
        add_deeplab_config(cfg)


# --------------------------------------------------------------------------- #
# Solver
# --------------------------------------------------------------------------- #
def _clip_cfg(clip_type: str, value: float = 0.5) -> CfgNode:
    cfg = get_cfg()
    cfg.SOLVER.CLIP_GRADIENTS.ENABLED = True
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_TYPE = clip_type
    cfg.SOLVER.CLIP_GRADIENTS.CLIP_VALUE = value
    return cfg


def test_maybe_add_gradient_clipping_on_an_instance_and_a_class():
    param = nn.Parameter(torch.zeros(3))
    optimizer = torch.optim.SGD([param], lr=1.0)
    disabled = get_cfg()
    disabled.SOLVER.CLIP_GRADIENTS.ENABLED = False
    assert maybe_add_gradient_clipping(disabled, optimizer) is optimizer
    assert maybe_add_gradient_clipping(disabled, torch.optim.SGD) is torch.optim.SGD

    clipped = maybe_add_gradient_clipping(_clip_cfg("value"), optimizer)
    assert clipped is optimizer and isinstance(optimizer, torch.optim.SGD)
    assert type(optimizer) is not torch.optim.SGD
    param.grad = torch.tensor([10.0, -0.2, -10.0])
    optimizer.step()
    torch.testing.assert_close(param.detach(), torch.tensor([-0.5, 0.2, 0.5]))

    cls = maybe_add_gradient_clipping(_clip_cfg("norm", 1.0), torch.optim.SGD)
    assert issubclass(cls, torch.optim.SGD) and cls is not torch.optim.SGD
    param2 = nn.Parameter(torch.zeros(2))
    opt2 = cls([param2], lr=1.0)
    param2.grad = torch.tensor([3.0, 4.0])  # norm 5 -> scaled to norm 1
    opt2.step()
    torch.testing.assert_close(param2.detach(), torch.tensor([-0.6, -0.8]))
    with pytest.raises(TypeError, match="Optimizer class or instance"):
        maybe_add_gradient_clipping(_clip_cfg("value"), object())


def test_warmup_poly_lr_follows_deeplabs_formula():
    param = nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.1)
    scheduler = WarmupPolyLR(
        optimizer, 10, warmup_factor=0.1, warmup_iters=4, power=0.9, constant_ending=0.3
    )
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()

    def expected(it: int) -> float:
        warm = 1.0 if it >= 4 else 0.1 * (1 - it / 4) + it / 4
        poly = (1 - it / 10) ** 0.9
        if warm == 1.0 and poly < 0.3:
            return 0.1 * 0.3
        return 0.1 * warm * poly

    assert lrs == pytest.approx([expected(it) for it in range(10)])
    assert lrs[-1] == pytest.approx(0.03), "held at the constant ending"


def test_deeplab_build_lr_scheduler_uses_poly_or_falls_back_to_ours():
    from mask2former.solver import LRMultiplier

    optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
    cfg = get_cfg()
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"
    cfg.SOLVER.MAX_ITER = 100
    scheduler = build_lr_scheduler(cfg, optimizer)
    assert isinstance(scheduler, WarmupPolyLR) and scheduler.max_iters == 100
    cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupMultiStepLR"
    cfg.SOLVER.STEPS = (50,)
    assert isinstance(build_lr_scheduler(cfg, optimizer), LRMultiplier)


# --------------------------------------------------------------------------- #
# Evaluation and DefaultTrainer.test / test_with_TTA
# --------------------------------------------------------------------------- #
class Recorder(DatasetEvaluator):
    """Counts images; reports ``{task: {"images": n}}``."""

    def __init__(self, task: str, required_outputs=None, output_dir=None):
        self.task = task
        self.required_outputs = required_outputs
        self.output_dir = output_dir
        self.count = 0

    def reset(self):
        self.count = 0

    def process(self, inputs, outputs):
        for out in outputs:
            for key in self.required_outputs or ():
                assert key in out, f"{self.task} got no {key}"
        self.count += len(outputs)

    def evaluate(self):
        return {self.task: {"images": float(self.count)}}


class ConstantSegmentor(nn.Module):
    """Class 1 everywhere, at the input's "height" x "width"."""

    def forward(self, batched_inputs):
        outputs = []
        for x in batched_inputs:
            scores = torch.zeros(3, x["height"], x["width"])
            scores[1] = 1.0
            outputs.append({"sem_seg": scores})
        return outputs


def _images(n: int) -> list[list[dict]]:
    return [[{"image": torch.zeros(3, 8, 12), "height": 8, "width": 12}] for _ in range(n)]


class ToyTrainer(DefaultTrainer):
    built: list = []

    @classmethod
    def build_test_loader(cls, cfg, dataset_name):
        return _images(2 if dataset_name == "a" else 3)

    @classmethod
    def build_evaluator(cls, cfg, dataset_name, output_folder=None):
        if dataset_name == "none":
            raise NotImplementedError("no evaluator for none")
        cls.built.append((dataset_name, output_folder))
        return DatasetEvaluators(
            [
                Recorder(f"sem_{dataset_name}", ("sem_seg",), output_folder),
                Recorder(f"pan_{dataset_name}", ("panoptic_seg",), output_folder),
            ]
        )


def _toy_cfg(*datasets: str) -> CfgNode:
    cfg = get_cfg()
    cfg.DATASETS.TEST = datasets
    cfg.OUTPUT_DIR = "/out"
    cfg.TEST.AUG.MIN_SIZES = (8, 16)
    cfg.TEST.AUG.MAX_SIZE = 100
    return cfg


def test_test_takes_one_evaluator_per_dataset_or_builds_them():
    model = ConstantSegmentor()
    single = ToyTrainer.test(_toy_cfg("a"), model, Recorder("x"))
    assert single == {"x": {"images": 2.0}}, "one dataset: the task dict itself"
    both = ToyTrainer.test(_toy_cfg("a", "b"), model, [Recorder("x"), Recorder("y")])
    assert both == OrderedDict(a={"x": {"images": 2.0}}, b={"y": {"images": 3.0}})
    with pytest.raises(ValueError, match="1 evaluators given for 2 datasets"):
        ToyTrainer.test(_toy_cfg("a", "b"), model, [Recorder("x")])
    skipped = ToyTrainer.test(_toy_cfg("none", "a"), model, [None, Recorder("x")])
    assert skipped == OrderedDict(none={}, a={"x": {"images": 2.0}})


def test_test_with_tta_scores_only_semantic_evaluators(caplog):
    ToyTrainer.built.clear()
    with caplog.at_level(logging.WARNING):
        results = ToyTrainer.test_with_TTA(_toy_cfg("a", "b"), ConstantSegmentor())
    assert list(results) == ["a_TTA", "b_TTA"]
    assert results["a_TTA"] == {"sem_a": {"images": 2.0}}
    assert results["b_TTA"] == {"sem_b": {"images": 3.0}}
    assert ToyTrainer.built == [("a", "/out/inference_TTA/a"), ("b", "/out/inference_TTA/b")]
    assert "Recorder on a left out" in caplog.text
    single = ToyTrainer.test_with_TTA(_toy_cfg("a"), ConstantSegmentor())
    assert single == {"sem_a_TTA": {"images": 2.0}}, "one dataset: task names get _TTA"


def test_test_with_tta_refuses_datasets_without_a_semantic_evaluator():
    class PanopticOnly(ToyTrainer):
        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            return Recorder("pan", ("panoptic_seg",))

    with pytest.raises(ValueError, match="gives only 'sem_seg', but 'a' is scored by Recorder"):
        PanopticOnly.test_with_TTA(_toy_cfg("a"), ConstantSegmentor())


def test_split_by_outputs_flattens_and_keeps_undeclared_evaluators():
    sem, pan, custom = Recorder("s", ("sem_seg",)), Recorder("p", ("panoptic_seg",)), Recorder("c")
    usable, unusable = split_by_outputs(
        DatasetEvaluators([sem, DatasetEvaluators([pan, custom])]), {"sem_seg"}
    )
    assert usable == [sem, custom] and unusable == [pan]


def test_verify_results():
    cfg = get_cfg()
    cfg.TEST.EXPECTED_RESULTS = [["sem_seg_TTA", "mIoU", 50.0, 1.0]]
    assert verify_results(cfg, {"sem_seg_TTA": {"mIoU": 50.5}})
    for bad in ({"sem_seg_TTA": {"mIoU": 52.0}}, {"sem_seg_TTA": {"mIoU": math.nan}}, {}):
        with pytest.raises(AssertionError, match="sem_seg_TTA/mIoU: expected 50.0"):
            verify_results(cfg, bad)


def test_instance_seg_evaluator_is_a_coco_evaluator_with_the_official_signature():
    from mask2former.data import DatasetCatalog

    # as in DefaultTrainer.test, the dataset is loaded (here: generated) before its evaluator
    DatasetCatalog.get("shapes_val_panoptic_with_sem_seg")
    evaluator = InstanceSegEvaluator("shapes_val_panoptic_with_sem_seg", output_dir=None)
    assert isinstance(evaluator, COCOEvaluator) and evaluator.required_outputs == ("instances",)


def test_lvis_evaluator_without_the_lvis_package_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "lvis", None)
    with pytest.raises(ImportError, match="needs the 'lvis' package"):
        LVISEvaluator("shapes_val_instance", output_dir=None)


def test_lvis_evaluator_gives_full_ap_on_ground_truth(tmp_path, monkeypatch):
    pytest.importorskip("lvis")
    # lvis 0.5.3 (the latest release) uses np.float, removed in NumPy 1.24; put it back here
    monkeypatch.setattr(np, "float", float, raising=False)
    import pycocotools.mask as mask_util

    from mask2former.data import MetadataCatalog
    from mask2former.structures import Instances

    masks = np.zeros((2, 32, 32), bool)
    masks[0, 2:12, 2:12] = True
    masks[1, 16:30, 10:30] = True
    annotations = []
    for k, mask in enumerate(masks):
        rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
        rle["counts"] = rle["counts"].decode()
        x, y, w, h = mask_util.toBbox(rle).tolist()
        annotations.append(
            {"id": k + 1, "image_id": 1, "category_id": k + 1, "segmentation": rle,
             "area": float(mask.sum()), "bbox": [x, y, w, h]}
        )  # fmt: skip
    gt = {
        "images": [{"id": 1, "height": 32, "width": 32, "neg_category_ids": [],
                    "not_exhaustive_category_ids": []}],
        "annotations": annotations,
        "categories": [{"id": 1, "name": "a", "frequency": "f"}, {"id": 2, "name": "b", "frequency": "r"}],
    }  # fmt: skip
    json_file = tmp_path / "lvis.json"
    json_file.write_text(json.dumps(gt))
    MetadataCatalog.get("lvis_toy").set(json_file=str(json_file), thing_classes=["a", "b"])
    try:
        evaluator = LVISEvaluator("lvis_toy", output_dir=str(tmp_path))
        evaluator.reset()
        instances = Instances(
            (32, 32),
            pred_masks=torch.from_numpy(masks),
            scores=torch.tensor([0.9, 0.8]),
            pred_classes=torch.tensor([0, 1]),
        )
        evaluator.process([{"image_id": 1}], [{"instances": instances}])
        results = evaluator.evaluate()["segm"]
    finally:
        MetadataCatalog.remove("lvis_toy")
    assert results["AP"] == pytest.approx(100.0)
    assert (tmp_path / "lvis_instances_results.json").is_file()


def test_setup_logger_by_position_or_keyword_configures_once(tmp_path):
    from mask2former.utils.logger import setup_logger

    name = f"compat_logger_{tmp_path.name}"
    first = setup_logger(str(tmp_path), 0, name=name)
    second = setup_logger(output=str(tmp_path), distributed_rank=0, name=name)
    assert first is second and len(first.handlers) == 2  # console + file


def test_deeplab_and_our_poly_schedules_give_the_same_learning_rates():
    from mask2former.solver import build_lr_scheduler as our_build_lr_scheduler

    def rates(build, constant_ending):
        cfg = get_cfg()
        cfg.SOLVER.LR_SCHEDULER_NAME = "WarmupPolyLR"
        cfg.SOLVER.MAX_ITER, cfg.SOLVER.WARMUP_ITERS, cfg.SOLVER.WARMUP_FACTOR = 50, 10, 0.01
        cfg.SOLVER.POLY_LR_POWER, cfg.SOLVER.POLY_LR_CONSTANT_ENDING = 2.0, constant_ending
        optimizer = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler = build(cfg, optimizer)
        out = []
        for _ in range(50):
            out.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            scheduler.step()
        return out

    for constant_ending in (0.0, 0.3):
        deeplab = rates(build_lr_scheduler, constant_ending)
        assert rates(our_build_lr_scheduler, constant_ending) == pytest.approx(deeplab, abs=1e-15)
        assert len(set(deeplab)) > 20  # warm-up, decay and (0.3) the constant ending
