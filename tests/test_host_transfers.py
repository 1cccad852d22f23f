"""Host transfers (each one a GPU stall) of a training step and an inference call of tiny
models, and of the parts on their hot paths, held at the numbers stated here.

What counts as a transfer: see tests/host_transfers.py. The tests run on the CPU, where every
call of a counted kind counts, and on a GPU where there is one (there only calls on GPU
tensors count). Before these bounds one step of the tiny Mask2Former made 22, 27 and 32
transfers for batches of 1, 2 and 3 (per image in the matcher and the criterion, per loss term
in the trainer, per deformable encoder layer), now 6 for any batch; inference of 2 images made
21, now 5.
"""

from __future__ import annotations

import pytest
import torch

from mask2former.engine.train_loop import SimpleTrainer
from mask2former.modeling.criterion import SetCriterion, loss_weights
from mask2former.modeling.matcher import HungarianMatcher
from mask2former.modeling.postprocessing import instance_inference, panoptic_inference
from mask2former.ops import force_reference_path, ms_deform_attn
from mask2former.structures.masks import _masks_to_boxes_torchvision
from mask2former.utils.events import EventStorage
from tests.host_transfers import HostTransferCounter
from tests.modeling.tiny import build_tiny_model, make_image, training_input
from tests.ops.conftest import _make_inputs

DEVICES = [
    "cpu",
    pytest.param(
        "cuda",
        marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU"),
    ),
]


def train_step_transfers(num_predictions: int) -> dict[str, int]:
    """The transfers of one ``SimpleTrainer`` step of a MaskFormer / Mask2Former model whose
    decoder makes ``num_predictions`` predictions (L layers + the learned queries' one), by
    file, whatever the batch size."""
    return {
        # Hungarian matching: one copy of the batch's cost matrices per prediction (L + 1)
        "modeling/matcher.py": num_predictions,
        # the label-range check of the batch's targets
        "modeling/criterion.py": 1,
        # the loss terms, read once for the finiteness check and for the logged metrics
        "engine/train_loop.py": 1,
        # the fused gradient-norm finiteness check
        "utils/finite.py": 1,
    }


#: Per image with semantic, panoptic and instance outputs on, all in post-processing:
#: panoptic_inference reads the kept queries' positions and (when a query is kept) their
#: classes, scores and areas; instance_inference reads the thing pairs' positions. Semantic
#: inference, the backbone, the pixel decoder (deformable attention included) and the
#: transformer decoder read nothing.
MAX_INFERENCE_TRANSFERS_PER_IMAGE = 3
MIN_INFERENCE_TRANSFERS_PER_IMAGE = 2


def _batch(size: int, device: str) -> list[dict]:
    shapes = [(64, 64), (48, 64), (64, 48)]
    batch = [training_input(*shapes[i % 3], seed=i) for i in range(size)]
    for x in batch:
        x["image"] = x["image"].to(device)
    return batch


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("batch_size", [1, 3])
def test_training_step_transfers_do_not_grow_with_the_batch(device, batch_size):
    model = build_tiny_model("mask2former", MODEL__DEVICE=device).train()
    batch = _batch(batch_size, device)
    trainer = SimpleTrainer(model, [batch], torch.optim.SGD(model.parameters(), lr=0.0))
    with EventStorage(0) as trainer.storage, HostTransferCounter(device) as counter:
        trainer.run_step()
    num_predictions = 1 + model.sem_seg_head.predictor.num_layers
    assert num_predictions == 3
    assert counter.by_file() == train_step_transfers(num_predictions), counter.report()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("name", ["mask2former", "maskformer_fpn"])
def test_inference_transfers_are_a_few_per_image_in_post_processing(device, name):
    model = build_tiny_model(name, MODEL__DEVICE=device)
    inputs = [
        {"image": make_image(64, 64, seed=0).to(device)},
        {"image": make_image(48, 64, seed=1).to(device), "height": 96, "width": 128},
    ]
    with torch.no_grad(), HostTransferCounter(device) as counter:
        model(inputs)
    files = counter.by_file()
    assert set(files) == {"modeling/postprocessing.py"}, counter.report()
    count = files["modeling/postprocessing.py"]
    assert MIN_INFERENCE_TRANSFERS_PER_IMAGE * len(inputs) <= count, counter.report()
    assert count <= MAX_INFERENCE_TRANSFERS_PER_IMAGE * len(inputs), counter.report()


# --------------------------------------------------------------------------- #
# The parts
# --------------------------------------------------------------------------- #
def _outputs(batch: int, queries: int = 5, classes: int = 4, size: int = 8) -> dict:
    g = torch.Generator().manual_seed(0)
    return {
        "pred_logits": torch.randn(batch, queries, classes + 1, generator=g),
        "pred_masks": torch.randn(batch, queries, size, size, generator=g),
    }


def _targets(counts, classes: int = 4, size: int = 16) -> list[dict]:
    g = torch.Generator().manual_seed(1)
    return [
        {
            "labels": torch.randint(classes, (n,), generator=g),
            "masks": (torch.rand(n, size, size, generator=g) > 0.5).float(),
        }
        for n in counts
    ]


def test_matcher_copies_the_costs_once_per_batch():
    matcher = HungarianMatcher(num_points=16)
    with HostTransferCounter() as counter:
        indices = matcher(_outputs(4), _targets([2, 0, 3, 1]))
    assert [len(src) for src, _ in indices] == [2, 0, 3, 1]
    assert counter.counts == {"cpu": 1}, counter.report()


def test_criterion_reads_the_costs_per_prediction_and_the_labels_once():
    num_aux = 2
    criterion = SetCriterion(
        num_classes=4,
        matcher=HungarianMatcher(num_points=16),
        weight_dict=loss_weights(2.0, 5.0, 5.0, num_aux),
        eos_coef=0.1,
        mask_loss="point",
        num_points=16,
        oversample_ratio=3.0,
        importance_sample_ratio=0.75,
    )
    outputs = _outputs(3)
    outputs["aux_outputs"] = [_outputs(3) for _ in range(num_aux)]
    with HostTransferCounter() as counter:
        losses = criterion(outputs, _targets([2, 0, 3]))
    assert len(losses) == 3 * (1 + num_aux)
    assert counter.by_file() == {"modeling/matcher.py": 1 + num_aux, "modeling/criterion.py": 1}


def test_deformable_attention_with_level_sizes_reads_nothing():
    inputs = _make_inputs(2, [(4, 5), (2, 3)], 2, 8, 6, 3, dtype=torch.float32)
    inputs = [t.requires_grad_() if t.is_floating_point() else t for t in inputs]
    sizes = [(4, 5), (2, 3)]
    expected = ms_deform_attn(*inputs)
    for forced in (False, True):
        with HostTransferCounter() as counter:
            if forced:
                with force_reference_path():
                    out = ms_deform_attn(*inputs, level_sizes=sizes)
            else:
                out = ms_deform_attn(*inputs, level_sizes=sizes)
            out.sum().backward()
        assert counter.total() == 0, counter.report()
        torch.testing.assert_close(out, expected)
    # without level_sizes the tensors are read, once
    with HostTransferCounter() as counter:
        ms_deform_attn(*inputs)
    assert counter.counts == {"tolist": 1}, counter.report()


def test_post_processing_reads_a_fixed_number_per_image():
    g = torch.Generator().manual_seed(0)
    mask_cls, mask_pred = torch.randn(6, 5, generator=g) * 4, torch.randn(6, 16, 16, generator=g)
    with HostTransferCounter() as counter:
        _, segments = panoptic_inference(
            mask_cls, mask_pred, thing_ids=[0, 1], object_mask_threshold=0.0, overlap_threshold=0.0
        )
    assert segments, "the case must keep a query"
    assert counter.counts == {"nonzero": 1, "tolist": 1}, counter.report()
    with HostTransferCounter() as counter:
        instances = instance_inference(mask_cls, mask_pred, topk=10, thing_ids=[0, 1])
    assert len(instances) > 0
    assert counter.counts == {"nonzero": 1}, counter.report()
    with HostTransferCounter() as counter:
        instance_inference(mask_cls, mask_pred, topk=10)
    assert counter.total() == 0, counter.report()


def test_masks_to_boxes_on_a_gpu_reads_nothing():
    masks = torch.rand(7, 9, 11, generator=torch.Generator().manual_seed(0)) > 0.8
    masks[0] = False
    with HostTransferCounter() as counter:
        _masks_to_boxes_torchvision(masks)  # the GPU path, here on the CPU
    assert counter.total() == 0, counter.report()


# --------------------------------------------------------------------------- #
# The counter itself
# --------------------------------------------------------------------------- #
def test_counter_counts_each_kind_once_and_restores_the_methods():
    x = torch.tensor([0.5, 2.0])
    original = torch.Tensor.__bool__
    with HostTransferCounter() as counter:
        x[0].item()
        f"{x[1]:.2f}"  # item inside __format__: counted once
        if x[1]:
            x.tolist()
        x[x > 1]
        x[x > 1] = 0.0  # a masked_fill_: no sizes read
        x[x > 1] = torch.zeros(0)
        torch.where(x > 1)
        torch.where(x > 1, x, x)  # elementwise: nothing read
        x.nonzero()
    assert counter.counts == {
        "item": 2,
        "__bool__": 1,
        "tolist": 1,
        "__getitem__ with a bool index": 1,
        "__setitem__ with a bool index": 1,
        "where (one argument)": 1,
        "nonzero": 1,
    }
    assert torch.Tensor.__bool__ is original and "__bool__" not in vars(torch.Tensor)
    with HostTransferCounter("cuda") as counter:  # on a GPU, calls on CPU tensors are free
        x[0].item()
        x.nonzero()
    assert counter.total() == 0
