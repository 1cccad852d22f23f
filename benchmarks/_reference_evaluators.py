"""REFERENCE, for benchmarks/evaluation.py only: detectron2's three evaluators written plainly.

What detectron2's ``COCOPanopticEvaluator``, ``COCOEvaluator`` (task "segm", as Mask2Former's
``InstanceSegEvaluator``) and ``SemSegEvaluator`` do per image and at the end, on the same
metadata and model outputs as ours, to time ours against in the same run:

* panoptic: ``process`` encodes each id map as a PNG with PIL, in memory; ``evaluate``
  writes the PNGs and a JSON to a temporary folder and runs panopticapi's ``pq_compute``
  (benchmarks/_panopticapi_reference.py: a process per CPU, PIL, ``np.unique``);
* instance: ``process`` encodes every mask with its own ``pycocotools.mask.encode`` call on
  a Fortran-ordered uint8 copy; ``evaluate`` saves the results and runs pycocotools'
  COCOeval (detectron2 defaults to its C++ ``COCOeval_opt``, which is not available here);
* semantic: ``process`` takes the argmax, reads the label PNG with PIL, adds a ``bincount``
  confusion matrix and RLE-encodes every predicted class (detectron2 does so whether or not
  it saves them); ``evaluate`` saves the RLEs and computes the IoUs (the boundary IoU of
  newer detectron2 versions is left out, which only makes this reference cheaper).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import tempfile
from typing import Optional

import numpy as np
import pycocotools.mask as mask_util
from _panopticapi_reference import pq_compute as panopticapi_pq_compute
from PIL import Image
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from mask2former.data.catalog import MetadataCatalog
from mask2former.utils.panoptic_png import id2rgb


class ReferencePanoptic:
    def __init__(self, dataset_name: str):
        self._md = MetadataCatalog.get(dataset_name)
        self._thing = {v: k for k, v in self._md.thing_dataset_id_to_contiguous_id.items()}
        self._stuff = {v: k for k, v in self._md.stuff_dataset_id_to_contiguous_id.items()}

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            ids, segments = out["panoptic_seg"]
            ids = ids.cpu().numpy()
            segments = [dict(s) for s in segments]
            for s in segments:
                mapping = self._thing if s["isthing"] else self._stuff
                s["category_id"] = mapping[s["category_id"]]
            name = os.path.splitext(os.path.basename(inp["file_name"]))[0] + ".png"
            with io.BytesIO() as png:
                Image.fromarray(id2rgb(ids)).save(png, format="PNG")
                self._predictions.append(
                    {"image_id": inp["image_id"], "file_name": name, "segments_info": segments}
                    | {"png_string": png.getvalue()}
                )

    def evaluate(self):
        with open(self._md.panoptic_json) as f:
            data = json.load(f)
        with tempfile.TemporaryDirectory() as pred_dir:
            for p in self._predictions:
                with open(os.path.join(pred_dir, p["file_name"]), "wb") as f:
                    f.write(p.pop("png_string"))
            data["annotations"] = self._predictions
            pred_json = os.path.join(pred_dir, "predictions.json")
            with open(pred_json, "w") as f:
                json.dump(data, f)
            with contextlib.redirect_stdout(io.StringIO()):
                res = panopticapi_pq_compute(
                    self._md.panoptic_json, pred_json, self._md.panoptic_root, pred_dir
                )
        return {"PQ": 100 * res["All"]["pq"], "SQ": 100 * res["All"]["sq"]}


class ReferenceInstance:
    def __init__(self, dataset_name: str, output_dir: Optional[str]):
        self._md = MetadataCatalog.get(dataset_name)
        self._output_dir = output_dir
        with contextlib.redirect_stdout(io.StringIO()):
            self._coco = COCO(self._md.json_file)

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            instances = out["instances"].to("cpu")
            rles = [
                mask_util.encode(np.array(mask[:, :, None], order="F", dtype="uint8"))[0]
                for mask in instances.pred_masks
            ]
            for rle in rles:
                rle["counts"] = rle["counts"].decode("utf-8")
            scores = instances.scores.tolist()
            classes = instances.pred_classes.tolist()
            self._predictions.extend(
                {"image_id": inp["image_id"], "category_id": classes[k], "segmentation": rles[k]}
                | {"score": scores[k]}
                for k in range(len(rles))
            )

    def evaluate(self):
        reverse = {v: k for k, v in self._md.thing_dataset_id_to_contiguous_id.items()}
        for p in self._predictions:
            p["category_id"] = reverse[p["category_id"]]
        if self._output_dir:
            with open(os.path.join(self._output_dir, "coco_instances_results.json"), "w") as f:
                json.dump(self._predictions, f)
        with contextlib.redirect_stdout(io.StringIO()):
            coco_eval = COCOeval(self._coco, self._coco.loadRes(copy.deepcopy(self._predictions)))
            coco_eval.params.maxDets = [1, 10, 100]
            coco_eval.evaluate()
            coco_eval.accumulate()
            coco_eval.summarize()
        precision = coco_eval.eval["precision"]
        per_class = []
        for k in range(precision.shape[2]):
            p = precision[:, :, k, 0, -1]
            per_class.append(np.mean(p[p > -1]) * 100 if (p > -1).any() else float("nan"))
        return {"AP": 100 * coco_eval.stats[0], "AP-per-class": per_class}


class ReferenceSemantic:
    def __init__(self, dataset_name: str, output_dir: Optional[str]):
        md = MetadataCatalog.get(dataset_name)
        self._num_classes, self._ignore = len(md.stuff_classes), md.ignore_label
        self._reverse = {v: k for k, v in md.stuff_dataset_id_to_contiguous_id.items()}
        self._output_dir = output_dir

    def reset(self):
        n = self._num_classes + 1
        self._conf = np.zeros((n, n), dtype=np.int64)
        self._predictions = []

    def process(self, inputs, outputs):
        n = self._num_classes
        for inp, out in zip(inputs, outputs):
            pred = np.array(out["sem_seg"].argmax(dim=0).to("cpu"), dtype=int)
            gt = np.array(Image.open(inp["sem_seg_file_name"]), dtype=np.int64)
            gt[gt == self._ignore] = n
            joint = (n + 1) * pred.reshape(-1) + gt.reshape(-1)
            self._conf += np.bincount(joint, minlength=(n + 1) ** 2).reshape(n + 1, n + 1)
            for label in np.unique(pred):
                mask = np.array((pred == label)[:, :, None], order="F", dtype=np.uint8)
                rle = mask_util.encode(mask)[0]
                rle["counts"] = rle["counts"].decode("utf-8")
                self._predictions.append(
                    {"file_name": inp["file_name"], "category_id": self._reverse[int(label)]}
                    | {"segmentation": rle}
                )

    def evaluate(self):
        if self._output_dir:
            with open(os.path.join(self._output_dir, "sem_seg_predictions.json"), "w") as f:
                json.dump(self._predictions, f)
        tp = self._conf.diagonal()[:-1].astype(float)
        pos_gt = self._conf[:-1, :-1].sum(axis=0).astype(float)
        pos_pred = self._conf[:-1, :-1].sum(axis=1).astype(float)
        valid = pos_gt > 0
        iou = np.full(self._num_classes, np.nan)
        iou[valid] = tp[valid] / (pos_gt + pos_pred - tp)[valid]
        return {"mIoU": 100 * np.mean(iou[valid])}
