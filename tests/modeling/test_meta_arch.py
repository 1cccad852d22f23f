"""Tiny models from the shipped configs: training steps, inference outputs, batching."""

import pytest
import torch

from mask2former.modeling.postprocessing import panoptic_queries
from tests.modeling.tiny import (
    CONFIGS,
    NUM_CLASSES,
    THING_IDS,
    build_tiny_model,
    make_image,
    make_instances,
    training_input,
)

MASK_FORMER_CONFIGS = ["mask2former", "maskformer_fpn", "maskformer_encoder"]

# Parameters whose gradient is exactly zero at initialisation, by construction:
# - the deformable encoder's sampling offsets and attention weights start with zero weights
#   (Deformable DETR's init), so positions (and the level embedding in them) do not reach
#   the output until the first update;
# - DETR's first decoder layer self-attends over zero targets, so its value input, its
#   attention pattern, its out_proj input (the zero value bias) and norm1 (of zeros) get none.
ZERO_GRAD_AT_INIT = {
    "sem_seg_head.pixel_decoder.transformer.level_embed",
    "sem_seg_head.predictor.transformer.decoder.layers.0.self_attn.in_proj_weight",
    "sem_seg_head.predictor.transformer.decoder.layers.0.self_attn.out_proj.weight",
    "sem_seg_head.predictor.transformer.decoder.layers.0.norm1.weight",
}


def train_step(model, inputs):
    model.train()
    losses = model(inputs)
    total = sum(losses.values())
    total.backward()
    return losses


def expected_loss_names(name: str, deep_supervision: bool) -> set[str]:
    if name == "per_pixel":
        return {"loss_sem_seg"}
    if name == "per_pixel_plus":
        return {"loss_sem_seg", "loss_sem_seg_0"} if deep_supervision else {"loss_sem_seg"}
    names = {"loss_ce", "loss_mask", "loss_dice"}
    if deep_supervision:
        num_aux = 2 if name == "mask2former" else 1  # two decoder layers (+ the query prediction)
        names |= {f"{n}_{i}" for n in names for i in range(num_aux)}
    return names


@pytest.mark.parametrize("deep_supervision", [True, False])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_training_step_gives_finite_losses_and_gradients(name, deep_supervision):
    model = build_tiny_model(name, deep_supervision)
    losses = train_step(model, [training_input(seed=0), training_input(48, 64, seed=1)])
    assert set(losses) == expected_loss_names(name, deep_supervision)
    assert all(torch.isfinite(v) and v.dim() == 0 for v in losses.values())
    for param_name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        assert p.grad is not None, f"{param_name} got no gradient"
        assert torch.isfinite(p.grad).all(), f"{param_name} has a non-finite gradient"
        if param_name not in ZERO_GRAD_AT_INIT:
            assert p.grad.abs().sum() > 0, f"{param_name} has an all-zero gradient"


def mask_former_input(masks: torch.Tensor, labels, seed: int = 0) -> dict:
    return {
        "image": make_image(*masks.shape[-2:], seed),
        "instances": make_instances(labels, masks),
    }


@pytest.mark.parametrize("name", MASK_FORMER_CONFIGS)
def test_empty_targets_and_all_ignored_image(name):
    """An image without segments (what the mappers give for an all-ignore label map)."""
    model = build_tiny_model(name)
    empty = mask_former_input(torch.zeros(0, 64, 64, dtype=torch.bool), [])
    losses = train_step(model, [empty, training_input(seed=1)])
    assert all(torch.isfinite(v) for v in losses.values())
    losses = train_step(model, [empty])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_mask"] == 0 and losses["loss_dice"] == 0 and losses["loss_ce"] > 0


@pytest.mark.parametrize("name", ["per_pixel", "per_pixel_plus"])
def test_all_ignored_semantic_labels(name):
    model = build_tiny_model(name)
    x = training_input()
    x["sem_seg"] = torch.full((64, 64), 255, dtype=torch.long)
    losses = train_step(model, [x])
    assert all(v == 0 for v in losses.values())
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", MASK_FORMER_CONFIGS)
def test_one_pixel_masks(name):
    model = build_tiny_model(name)
    masks = torch.zeros(2, 64, 64, dtype=torch.bool)
    masks[0, 5, 7] = True
    masks[1, 63, 63] = True
    losses = train_step(model, [mask_former_input(masks, [0, 3])])
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name", list(CONFIGS))
def test_inference_outputs_at_the_original_size(name):
    model = build_tiny_model(name)
    # A 50x70 network input (not a multiple of 32) standing for a 100x140 original image.
    x = {"image": make_image(50, 70), "height": 100, "width": 140}
    with torch.no_grad():
        (result,) = model([x])
    assert result["sem_seg"].shape == (NUM_CLASSES, 100, 140)
    if name.startswith("per_pixel"):
        assert set(result) == {"sem_seg"}
        return
    assert set(result) == {"sem_seg", "panoptic_seg", "instances"}
    assert result["sem_seg"].min() >= 0  # probabilities
    seg, info = result["panoptic_seg"]
    assert seg.shape == (100, 140) and seg.dtype == torch.int32
    ids = [s["id"] for s in info]
    assert len(ids) == len(set(ids))
    assert set(seg.unique().tolist()) - {0} == set(ids)
    for s in info:
        assert 0 <= s["category_id"] < NUM_CLASSES
        assert s["isthing"] == (s["category_id"] in THING_IDS)
    inst = result["instances"]
    assert inst.image_size == (100, 140)
    assert inst.pred_masks.shape[1:] == (100, 140)
    assert torch.all(inst.scores[:-1] >= inst.scores[1:])
    assert set(inst.pred_classes.tolist()) <= set(THING_IDS)  # panoptic model: things only


def test_panoptic_only_inference_resizes_the_kept_queries_to_the_same_result():
    """With panoptic output alone only the kept queries' masks are resized: the panoptic
    result is bit for bit the one computed beside semantic and instance outputs."""
    model = build_tiny_model("mask2former")
    x = {"image": make_image(50, 70), "height": 100, "width": 140}
    with torch.no_grad():
        model.sem_seg_head.predictor.class_embed.bias[-1] = -20.0  # no query is no-object
        model.sem_seg_head.predictor.class_embed.bias[0] = 1.0
        model.object_mask_threshold = 0.4  # so that some queries are dropped
        logits = []
        model.sem_seg_head.register_forward_hook(lambda m, i, out: logits.append(out))
        (everything,) = model([x])
        model.semantic_on = model.instance_on = False
        (panoptic,) = model([x])
    assert set(panoptic) == {"panoptic_seg"}
    (seg, info), (seg_all, info_all) = panoptic["panoptic_seg"], everything["panoptic_seg"]
    assert info and info == info_all and torch.equal(seg, seg_all)
    kept = panoptic_queries(logits[0]["pred_logits"][0], model.object_mask_threshold)
    assert 0 < len(kept) < logits[0]["pred_logits"].shape[1]


def test_panoptic_inference_without_thing_ids_raises():
    from mask2former.modeling import build_model
    from tests.modeling.tiny import tiny_cfg

    model = build_model(tiny_cfg("mask2former")).eval()
    with pytest.raises(ValueError, match="thing_ids"):
        model([{"image": make_image()}])


@pytest.mark.parametrize("name", MASK_FORMER_CONFIGS)
def test_batch_of_two_sizes_gives_what_each_gives_alone(name):
    """Images of different sizes that pad to the same size give, batched, what they give alone.

    The published model passes no padding mask to its head (its checkpoints were trained
    that way): padding pixels enter the convolutions, the position embeddings and the
    attention. Batching is therefore exact only when each image alone pads to the batch's
    padded size; here SIZE_DIVISIBILITY 32 pads 64x64 and 50x40 alike to 64x64. What is
    checked is that nothing leaks between images and that each result is cropped to its
    own size before being resized to its own original size.
    """
    model = build_tiny_model(name, MODEL__MASK_FORMER__SIZE_DIVISIBILITY=32)
    a = {"image": make_image(64, 64, seed=0)}
    b = {"image": make_image(50, 40, seed=1), "height": 75, "width": 60}
    with torch.no_grad():
        batched = model([a, b])
        alone = [model([a])[0], model([b])[0]]
    for got, want in zip(batched, alone):
        torch.testing.assert_close(got["sem_seg"], want["sem_seg"], atol=1e-4, rtol=1e-4)
        assert got["sem_seg"].shape[-2:] == want["sem_seg"].shape[-2:]
        got_inst, want_inst = got["instances"], want["instances"]
        torch.testing.assert_close(got_inst.scores, want_inst.scores, atol=1e-4, rtol=1e-4)
    assert batched[1]["sem_seg"].shape == (NUM_CLASSES, 75, 60)


def _same_result(a: dict, b: dict) -> bool:
    """Bit-equal outputs: sem_seg, panoptic_seg (ids and infos), instances (every field)."""
    if set(a) != set(b) or not torch.equal(a["sem_seg"], b["sem_seg"]):
        return False
    if "panoptic_seg" in a:
        (seg_a, info_a), (seg_b, info_b) = a["panoptic_seg"], b["panoptic_seg"]
        if not torch.equal(seg_a, seg_b) or info_a != info_b:
            return False
    if "instances" in a:
        fields_a, fields_b = a["instances"].get_fields(), b["instances"].get_fields()
        if set(fields_a) != set(fields_b):
            return False
        for key, value in fields_a.items():
            other = fields_b[key]
            if hasattr(value, "tensor"):  # Boxes
                value, other = value.tensor, other.tensor
            if not torch.equal(value, other):
                return False
    return True


@pytest.mark.parametrize("name", MASK_FORMER_CONFIGS + ["per_pixel"])
def test_batch_independent_inference_gives_exactly_what_each_image_gives_alone(name):
    """TEST.BATCH_INDEPENDENT: a batch of three sizes gives, bit for bit, each image's own
    results; the published batched inference (the default) does not on this batch, since
    SIZE_DIVISIBILITY 32 pads 64x64 and 50x50 alone to 64x64 but to 64x96 beside 40x96."""
    inputs = [
        {"image": make_image(64, 64, seed=0)},
        {"image": make_image(40, 96, seed=1), "height": 60, "width": 144},
        {"image": make_image(50, 50, seed=2)},
    ]
    published = build_tiny_model(name, MODEL__MASK_FORMER__SIZE_DIVISIBILITY=32)
    independent = build_tiny_model(
        name, MODEL__MASK_FORMER__SIZE_DIVISIBILITY=32, TEST__BATCH_INDEPENDENT=True
    )
    with torch.no_grad():
        alone = [published([x])[0] for x in inputs]
        got = independent(inputs)
        batched = published(inputs)
    assert len(got) == len(inputs)
    assert all(_same_result(g, a) for g, a in zip(got, alone))
    assert not all(_same_result(b, a) for b, a in zip(batched, alone))


@pytest.mark.parametrize("name", MASK_FORMER_CONFIGS)
def test_low_memory_inference_gives_the_same_outputs(name):
    """``low_memory_inference`` (off by default, as evaluation runs) changes nothing but the
    instance masks' dtype: bool instead of float 0/1."""
    model = build_tiny_model(name, seed=2)  # a seed whose models predict panoptic segments
    assert model.low_memory_inference is False
    # a 50x70 network input standing for a 200x280 original image (H x W a multiple of 32)
    x = {"image": make_image(50, 70), "height": 200, "width": 280}
    with torch.no_grad():
        (want,) = model([x])
        model.low_memory_inference = True
        (got,) = model([x])
    assert list(got) == list(want) == ["sem_seg", "panoptic_seg", "instances"]
    assert torch.equal(got["sem_seg"], want["sem_seg"])
    assert torch.equal(got["panoptic_seg"][0], want["panoptic_seg"][0])
    assert got["panoptic_seg"][1] == want["panoptic_seg"][1] and want["panoptic_seg"][1]
    got_inst, want_inst = got["instances"], want["instances"]
    assert want_inst.pred_masks.dtype == torch.float32 and got_inst.pred_masks.dtype == torch.bool
    assert torch.equal(got_inst.pred_masks, want_inst.pred_masks.bool()) and len(got_inst)
    for field in ("scores", "pred_classes"):
        assert torch.equal(got_inst.get(field), want_inst.get(field))
    assert torch.equal(got_inst.pred_boxes.tensor, want_inst.pred_boxes.tensor)


@pytest.mark.skipif(
    not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="no bfloat16 instructions"
)
def test_bfloat16_inference_precision_gives_float32_outputs_close_to_float32():
    x = {"image": make_image(64, 64)}
    model = build_tiny_model("mask2former")
    with torch.no_grad():
        (reference,) = model([x])
        model.inference_dtype = torch.bfloat16
        (result,) = model([x])
    assert result["sem_seg"].dtype == torch.float32
    assert not torch.equal(result["sem_seg"], reference["sem_seg"])
    torch.testing.assert_close(result["sem_seg"], reference["sem_seg"], atol=0.05, rtol=0)


def test_unknown_inference_precision_is_refused():
    with pytest.raises(ValueError, match="TEST.PRECISION must be one of"):
        build_tiny_model("mask2former", TEST__PRECISION="float16")
