"""Cityscapes evaluators on a two-image fake Cityscapes layout, scored by cityscapesScripts."""

import gc
import os

import cv2
import numpy as np
import pytest
import torch
from cityscapesscripts.helpers.labels import name2label
from eval_helpers import unique_name

from mask2former.data.catalog import MetadataCatalog
from mask2former.evaluation import CityscapesInstanceEvaluator, CityscapesSemSegEvaluator
from mask2former.structures import Instances

THINGS = ["person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"]
FRAMES = ["frankfurt_000000_000294", "lindau_000001_000019"]


def _scene(k):
    """(label ids, instance ids, [(mask, thing index)]) of a 64x128 scene."""
    labels = np.full((64, 128), name2label["road"].id, dtype=np.uint16)
    labels[:20] = name2label["sky"].id
    labels[:, :4] = 0  # unlabeled: not evaluated
    instances = labels.copy()
    objects = []
    for j, (name, x0) in enumerate([("car", 10 + 5 * k), ("person", 60), ("car", 90)]):
        mask = np.zeros(labels.shape, dtype=bool)
        mask[25:50, x0 : x0 + 20] = True
        labels[mask] = name2label[name].id
        instances[mask] = name2label[name].id * 1000 + j
        objects.append((mask, THINGS.index(name)))
    return labels, instances, objects


@pytest.fixture()
def cityscapes(tmp_path):
    name = unique_name("cityscapes")
    scenes = {}
    for k, frame in enumerate(FRAMES):
        city = tmp_path / "gtFine" / frame.split("_")[0]
        city.mkdir(parents=True, exist_ok=True)
        labels, instances, objects = _scene(k)
        cv2.imwrite(str(city / f"{frame}_gtFine_labelIds.png"), labels.astype(np.uint8))
        cv2.imwrite(str(city / f"{frame}_gtFine_instanceIds.png"), instances)
        scenes[frame] = (labels, objects)
    MetadataCatalog.get(name).set(gt_dir=str(tmp_path / "gtFine"), thing_classes=THINGS)
    yield name, scenes
    MetadataCatalog.remove(name)


def _inputs(frame):
    return [{"file_name": f"/data/leftImg8bit/val/x/{frame}_leftImg8bit.png", "image_id": frame}]


def test_semantic_gt_as_prediction_is_100_and_a_miss_lowers_iou(cityscapes):
    from cityscapesscripts.helpers.labels import id2label

    name, scenes = cityscapes
    ev = CityscapesSemSegEvaluator(name)
    for shift in (0, 1):
        ev.reset()
        for frame, (labels, _) in scenes.items():
            train = np.vectorize(lambda i: max(id2label[int(i)].trainId, 0) % 255)(labels)
            if shift:  # predict "sky" for the road rows 54..63: road IoU drops, sky IoU too
                train[54:] = id2label[name2label["sky"].id].trainId
            scores = torch.nn.functional.one_hot(torch.from_numpy(train).long(), 19)
            ev.process(_inputs(frame), [{"sem_seg": scores.permute(2, 0, 1).float()}])
        res = ev.evaluate()["sem_seg"]
        if shift == 0:
            assert res["IoU"] == pytest.approx(100.0) and res["iIoU"] == pytest.approx(100.0)
        else:
            assert 50 < res["IoU"] < 100


def test_instance_gt_as_prediction_is_100(cityscapes, tmp_path, monkeypatch):
    name, scenes = cityscapes
    monkeypatch.chdir(tmp_path)
    ev = CityscapesInstanceEvaluator(name)
    ev.reset()
    for frame, (_, objects) in scenes.items():
        masks = np.stack([m for m, _ in objects])
        inst = Instances(masks.shape[1:])
        inst.pred_masks = torch.from_numpy(masks)
        inst.scores = torch.ones(len(objects))
        inst.pred_classes = torch.tensor([c for _, c in objects])
        ev.process(_inputs(frame), [{"instances": inst}])
    res = ev.evaluate()["segm"]
    assert res["AP"] == pytest.approx(100.0) and res["AP50"] == pytest.approx(100.0)
    assert not (tmp_path / "matches.json").exists()  # nothing left in the working directory


def test_missing_ground_truth_is_a_clear_error(cityscapes):
    name, _ = cityscapes
    ev = CityscapesSemSegEvaluator(name)
    ev.reset()
    ev.process(_inputs("bremen_000000_000019"), [{"sem_seg": torch.zeros(19, 64, 128)}])
    with pytest.raises(FileNotFoundError, match="bremen_000000_000019"):
        ev.evaluate()


def test_temporary_folder_is_removed_after_a_failed_evaluation(cityscapes):
    name, _ = cityscapes
    ev = CityscapesSemSegEvaluator(name)
    ev.reset()
    ev.process(_inputs(FRAMES[0]), [{"sem_seg": torch.zeros(19, 64, 128)}])
    temp_dir = ev._temp_dir
    assert os.listdir(temp_dir) == [f"{FRAMES[0]}_pred.png"]
    del ev  # the evaluation stopped here (say, on a corrupt image): evaluate() never ran
    gc.collect()
    assert not os.path.exists(temp_dir)
