"""COCOPanopticEvaluator on model-style outputs: 100 on ground truth, equal to file scoring."""

import json
import os

import numpy as np
import pytest
import torch
from panoptic_reference import reference_pq_compute
from PIL import Image

from mask2former.config import get_cfg
from mask2former.data import BadSampleError, build_detection_test_loader
from mask2former.data.catalog import MetadataCatalog
from mask2former.data.dataset_mappers import DatasetMapper
from mask2former.evaluation import COCOPanopticEvaluator, inference_on_dataset, pq_compute
from mask2former.evaluation.panoptic_quality import read_panoptic_png


def model_outputs(name, json_file, folder):
    """(inputs, outputs) as the model would give them for the annotations of a panoptic json."""
    meta = MetadataCatalog.get(name)
    to_contiguous = {
        **meta.thing_dataset_id_to_contiguous_id,
        **meta.stuff_dataset_id_to_contiguous_id,
    }
    things = set(meta.thing_dataset_id_to_contiguous_id)
    inputs, outputs = [], []
    with open(json_file) as f:
        annotations = json.load(f)["annotations"]
    for ann in annotations:
        ids = torch.from_numpy(
            read_panoptic_png(os.path.join(folder, ann["file_name"])).astype(np.int32)
        )
        segments = [
            {
                "id": s["id"],
                "category_id": to_contiguous[s["category_id"]],
                "isthing": s["category_id"] in things,
            }
            for s in ann["segments_info"]
        ]
        inputs.append(
            {"image_id": ann["image_id"], "file_name": f"/images/{ann['image_id']:06d}.jpg"}
        )
        outputs.append({"panoptic_seg": (ids, segments)})
    return inputs, outputs


def _evaluate(name, inputs, outputs, output_dir=None):
    evaluator = COCOPanopticEvaluator(name, output_dir, distributed=False)
    evaluator.reset()
    for inp, out in zip(inputs, outputs):
        evaluator.process([inp], [out])
    return evaluator.evaluate()["panoptic_seg"]


def test_ground_truth_as_prediction_gives_100(panoptic_dataset):
    name, (gt_json, _, gt_folder, _) = panoptic_dataset
    res = _evaluate(name, *model_outputs(name, gt_json, gt_folder))
    for key in ("PQ", "SQ", "RQ", "PQ_th", "SQ_th", "RQ_th", "PQ_st", "SQ_st", "RQ_st"):
        assert res[key] == pytest.approx(100.0), key


def test_in_memory_equals_reference_and_written_files(panoptic_dataset, tmp_path):
    name, files = panoptic_dataset
    inputs, outputs = model_outputs(name, files[1], files[3])
    res = _evaluate(name, inputs, outputs, output_dir=str(tmp_path))
    ref = reference_pq_compute(*files, workers=1)
    for group, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
        for m in ("pq", "sq", "rq"):
            assert res[m.upper() + suffix] == pytest.approx(100 * ref[group][m], abs=1e-9)
    assert 5 < res["PQ"] < 95
    # The written predictions (PNG + JSON) score the same through pq_compute.
    written = pq_compute(files[0], str(tmp_path / "panoptic_seg_predictions.json"), files[2])
    assert 100 * written["All"]["pq"] == pytest.approx(res["PQ"], abs=1e-9)
    assert res["PQ-thing0"] == pytest.approx(100 * ref["per_class"][1]["pq"], abs=1e-9)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary left


class _GroundTruthModel(torch.nn.Module):
    """Returns the ground truth of each input's image_id as its panoptic prediction."""

    def __init__(self, inputs, outputs):
        super().__init__()
        self.outputs = {inp["image_id"]: out for inp, out in zip(inputs, outputs)}

    def forward(self, batch):
        return [self.outputs[d["image_id"]] for d in batch]


def test_failed_evaluation_names_the_image_and_leaves_no_partial_files(panoptic_dataset, tmp_path):
    name, (gt_json, _, gt_folder, _) = panoptic_dataset
    inputs, outputs = model_outputs(name, gt_json, gt_folder)
    records = []
    for inp in inputs:
        path = tmp_path / os.path.basename(inp["file_name"])
        Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(path, format="JPEG")
        records.append({**inp, "file_name": str(path), "height": 60, "width": 80})
    corrupt = records[2]["file_name"]
    with open(corrupt, "wb") as f:
        f.write(b"\xff\xd8 truncated")
    output_dir = tmp_path / "inference" / name  # as DefaultTrainer.build_evaluator names it
    loader = build_detection_test_loader(records, mapper=DatasetMapper(get_cfg(), False))
    evaluator = COCOPanopticEvaluator(name, str(output_dir), distributed=False)
    with pytest.raises(BadSampleError) as info:
        inference_on_dataset(_GroundTruthModel(inputs, outputs), loader, evaluator)
    message = str(info.value)
    assert message.startswith(f"{corrupt}: cannot decode the image"), message
    assert "evaluation does not skip" in message and "DATALOADER.SKIP_BAD_SAMPLES" in message
    # two images were evaluated before the bad one; none of their predictions was written
    assert not output_dir.exists() or not any(output_dir.rglob("*"))


def test_malformed_outputs_give_clear_errors(panoptic_dataset):
    name, (gt_json, _, gt_folder, _) = panoptic_dataset
    inputs, outputs = model_outputs(name, gt_json, gt_folder)
    ids, segments = outputs[0]["panoptic_seg"]
    evaluator = COCOPanopticEvaluator(name, distributed=False)
    with pytest.raises(TypeError, match="must be an integer tensor; got torch.float32"):
        evaluator.process(inputs[:1], [{"panoptic_seg": (ids.float(), segments)}])
    missing = segments[0]["id"]
    with pytest.raises(KeyError, match=rf"\[{missing}\] are in the predicted id map but not in"):
        evaluator.process(inputs[:1], [{"panoptic_seg": (ids, segments[1:])}])
    with pytest.raises(KeyError, match="not a contiguous thing id"):
        bad = [dict(s, category_id=99, isthing=True) for s in segments]
        evaluator.process(inputs[:1], [{"panoptic_seg": (ids, bad)}])
    with pytest.raises(KeyError, match="is not in"):
        evaluator.process([{"image_id": 12345, "file_name": "x.jpg"}], outputs[:1])


def test_label_divisor_format_without_segments_info(panoptic_dataset):
    # detectron2's alternative output: segments_info None and each pixel class * divisor +
    # instance, -1 for VOID. Ground truth written that way scores 100 as well.
    name, (gt_json, _, gt_folder, _) = panoptic_dataset
    inputs, outputs = model_outputs(name, gt_json, gt_folder)
    converted = []
    for out in outputs:
        ids, segments = out["panoptic_seg"]
        labels = torch.full_like(ids, -1, dtype=torch.int64)
        for k, seg in enumerate(segments):
            labels[ids == seg["id"]] = seg["category_id"] * 1000 + k
        converted.append({"panoptic_seg": (labels, None)})
    res = _evaluate(name, inputs, converted)
    assert res["PQ"] == pytest.approx(100.0) and res["PQ_th"] == pytest.approx(100.0)
