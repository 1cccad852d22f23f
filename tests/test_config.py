"""Config: the published YAML files load; bad keys, types and YAML tags fail loudly."""

import hashlib
import re
from pathlib import Path

import pytest

from mask2former.config import (
    ConfigError,
    ExpressionError,
    add_maskformer2_video_config,
    get_cfg,
    safe_eval_expression,
)
from mask2former.config import config as config_module
from mask2former.config import expression as expression_module
from mask2former.config.compat import VIDEO_KEYS
from tests.published import (
    CONFIG_DIR,
    published_config_hashes,
    published_configs,
    published_video_config_hashes,
)


def _assert_shipped_unchanged(hashes: dict[str, str]) -> None:
    for relative, digest in hashes.items():
        path = CONFIG_DIR / relative
        assert path.is_file(), f"published config missing from configs/: {relative}"
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest, f"changed: {relative}"


def test_shipped_configs_are_the_published_files():
    """configs/ holds every published image config unchanged (57 Mask2Former, 36 MaskFormer)."""
    hashes = published_config_hashes()
    assert len(hashes) == 93
    assert sum(r.startswith("maskformer/") for r in hashes) == 36
    _assert_shipped_unchanged(hashes)


def test_shipped_video_configs_are_the_published_files():
    """configs/youtubevis_20{19,21} hold the published video configs unchanged (7 files each)."""
    hashes = published_video_config_hashes()
    assert len(hashes) == 14
    assert sum(r.startswith("youtubevis_2019/") for r in hashes) == 7
    _assert_shipped_unchanged(hashes)
    for relative in hashes:
        cfg = get_cfg()
        cfg.merge_from_file(str(CONFIG_DIR / relative))
        assert cfg.INPUT.MIN_SIZE_TRAIN_SAMPLING == "choice_by_clip", relative
        assert cfg.INPUT.RANDOM_FLIP == "flip_by_clip" and cfg.MODEL.MASK_ON is True, relative
        if "Base-" not in relative:
            assert cfg.MODEL.META_ARCHITECTURE == "VideoMaskFormer", relative
            assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 40, relative


def test_video_config_keys_have_the_official_defaults():
    """add_maskformer2_video_config (mask2former_video/config.py) and detectron2's MASK_ON."""
    cfg = get_cfg()
    assert cfg.INPUT.SAMPLING_FRAME_NUM == 2 and cfg.INPUT.SAMPLING_FRAME_RANGE == 20
    assert cfg.INPUT.SAMPLING_FRAME_SHUFFLE is False and cfg.INPUT.AUGMENTATIONS == []
    assert cfg.MODEL.MASK_ON is False
    for key in ("SAMPLING_FRAME_NUM", "SAMPLING_FRAME_SHUFFLE", "AUGMENTATIONS"):
        del cfg.INPUT[key]
    cfg.INPUT.SAMPLING_FRAME_RANGE = 5  # set before the call: kept
    add_maskformer2_video_config(cfg)
    assert cfg.INPUT.SAMPLING_FRAME_NUM == 2 and cfg.INPUT.SAMPLING_FRAME_RANGE == 5
    assert cfg.INPUT.SAMPLING_FRAME_SHUFFLE is False and cfg.INPUT.AUGMENTATIONS == []
    assert set(VIDEO_KEYS) == {
        f"INPUT.{k}"
        for k in (
            "SAMPLING_FRAME_NUM",
            "SAMPLING_FRAME_RANGE",
            "SAMPLING_FRAME_SHUFFLE",
            "AUGMENTATIONS",
        )
    }


def test_every_published_config_loads():
    for path in published_configs():
        cfg = get_cfg()
        cfg.merge_from_file(str(path))
        assert cfg.MODEL.BACKBONE.NAME in (
            "build_resnet_backbone",
            "build_resnet_deeplab_backbone",
            "D2SwinTransformer",
        ), path


def test_published_values_arrive():
    """A Swin-L panoptic config: values from the file and from its _BASE_ chain."""
    path = (
        CONFIG_DIR
        / "coco/panoptic-segmentation/swin"
        / "maskformer2_swin_large_IN21k_384_bs16_100ep.yaml"
    )
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    assert cfg.MODEL.SWIN.EMBED_DIM == 192 and cfg.MODEL.SWIN.WINDOW_SIZE == 12
    assert cfg.MODEL.MASK_FORMER.NUM_OBJECT_QUERIES == 200
    assert cfg.MODEL.MASK_FORMER.TEST.PANOPTIC_ON is True
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 133  # from Base-COCO-PanopticSegmentation


def test_eval_list_comprehension_in_published_config():
    """ADE20K's MIN_SIZE_TRAIN is an !!python/object/apply:eval list comprehension."""
    path = CONFIG_DIR / "ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml"
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    assert list(cfg.INPUT.MIN_SIZE_TRAIN) == [int(x * 0.1 * 512) for x in range(5, 21)]


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "file_name, text, key",
    [
        ("typo.yaml", "MODEL:\n  RESNETS:\n    DEPHT: 101\n", "MODEL.RESNETS.DEPHT"),  # unknown
        ("bad_type.yaml", "SOLVER:\n  MAX_ITER: 'many'\n", "SOLVER.MAX_ITER"),  # wrong type
    ],
)
def test_unknown_key_or_wrong_type_names_the_key_and_the_file(tmp_path, file_name, text, key):
    path = _write(tmp_path, file_name, text)
    with pytest.raises(ConfigError) as info:
        get_cfg().merge_from_file(str(path))
    assert key in str(info.value) and file_name in str(info.value)


def test_unknown_key_in_a_base_file_names_the_merged_file(tmp_path):
    _write(tmp_path, "base.yaml", "SOLVER:\n  NOT_A_KEY: 1\n")
    child = _write(tmp_path, "child.yaml", "_BASE_: base.yaml\n")
    with pytest.raises(ConfigError, match=r"child\.yaml.*SOLVER\.NOT_A_KEY"):
        get_cfg().merge_from_file(str(child))


def test_instance_top_k_is_test_detections_per_image_only(tmp_path):
    """The official key is TEST.DETECTIONS_PER_IMAGE; our former duplicate under
    MODEL.MASK_FORMER.TEST is gone and fails like any unknown key."""
    path = _write(
        tmp_path, "topk.yaml", "MODEL:\n  MASK_FORMER:\n    TEST:\n      DETECTIONS_PER_IMAGE: 50\n"
    )
    with pytest.raises(ConfigError) as info:
        get_cfg().merge_from_file(str(path))
    message = str(info.value)
    assert "unknown config key MODEL.MASK_FORMER.TEST.DETECTIONS_PER_IMAGE" in message
    assert "topk.yaml" in message
    path = _write(tmp_path, "topk_ok.yaml", "TEST:\n  DETECTIONS_PER_IMAGE: 50\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 50


def test_defaults_are_the_official_ones():
    """Values of detectron2's get_cfg() + add_deeplab_config + add_maskformer2_config that a
    config leaving these keys out gets officially (detectron2 config/defaults.py: CONVS_DIM 128,
    NUM_CLASSES 54; projects/DeepLab/deeplab/config.py: STEM_TYPE, RES5_MULTI_GRID)."""
    cfg = get_cfg()
    assert cfg.MODEL.SEM_SEG_HEAD.CONVS_DIM == 128
    assert cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES == 54
    assert cfg.MODEL.RESNETS.STEM_TYPE == "deeplab"
    assert list(cfg.MODEL.RESNETS.RES5_MULTI_GRID) == [1, 2, 4]
    assert cfg.TEST.DETECTIONS_PER_IMAGE == 100
    assert cfg.MODEL.MASK_FORMER.CLASS_WEIGHT == 1.0 and cfg.MODEL.MASK_FORMER.MASK_WEIGHT == 20.0


def test_group_replaced_by_a_value_is_refused(tmp_path):
    path = _write(tmp_path, "group.yaml", "MODEL:\n  SWIN: 3\n")
    with pytest.raises(ConfigError, match="MODEL.SWIN"):
        get_cfg().merge_from_file(str(path))


def test_int_is_accepted_for_a_float_key(tmp_path):
    path = _write(tmp_path, "lr.yaml", "SOLVER:\n  BASE_LR: 1\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(path))
    assert cfg.SOLVER.BASE_LR == 1.0 and isinstance(cfg.SOLVER.BASE_LR, float)


@pytest.mark.parametrize(
    "yaml_value",
    [
        "!!python/object/apply:eval [\"__import__('os').system('touch {marker}')\"]",
        "!!python/object/apply:os.system ['touch {marker}']",
        "!!python/object/apply:eval [\"open('{marker}', 'w')\"]",
    ],
)
def test_code_in_yaml_is_refused_and_never_runs(tmp_path, yaml_value):
    marker = tmp_path / "pwned"
    text = "SOLVER:\n  STEPS: " + yaml_value.format(marker=marker) + "\n"
    path = _write(tmp_path, "evil.yaml", text)
    with pytest.raises(ConfigError, match="evil.yaml"):
        get_cfg().merge_from_file(str(path))
    assert not marker.exists()


def test_base_inheritance_chain_and_relative_paths(tmp_path):
    (tmp_path / "sub").mkdir()
    _write(tmp_path, "grand.yaml", "SOLVER:\n  MAX_ITER: 10\n  BASE_LR: 0.5\nSEED: 3\n")
    _write(tmp_path, "sub/parent.yaml", "_BASE_: ../grand.yaml\nSOLVER:\n  MAX_ITER: 20\n")
    child = _write(tmp_path, "sub/child.yaml", "_BASE_: parent.yaml\nSOLVER:\n  BASE_LR: 0.25\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(child))
    assert (cfg.SOLVER.MAX_ITER, cfg.SOLVER.BASE_LR, cfg.SEED) == (20, 0.25, 3)
    assert cfg.SOLVER.IMS_PER_BATCH == get_cfg().SOLVER.IMS_PER_BATCH  # untouched default


def test_missing_base_file_is_named_with_the_file_that_names_it(tmp_path):
    parent = _write(tmp_path, "parent.yaml", "_BASE_: does-not-exist.yaml\n")
    child = _write(tmp_path, "child.yaml", "_BASE_: parent.yaml\n")
    with pytest.raises(ConfigError) as info:
        get_cfg().merge_from_file(str(child))
    message = str(info.value)
    assert str(tmp_path / "does-not-exist.yaml") in message
    assert f"the _BASE_ of {parent}" in message


@pytest.mark.parametrize(
    "files, cycle",
    [
        ({"self.yaml": "_BASE_: self.yaml\n"}, ["self.yaml", "self.yaml"]),
        (
            {"a.yaml": "_BASE_: b.yaml\n", "b.yaml": "_BASE_: [c.yaml, sub/../a.yaml]\n"},
            ["a.yaml", "b.yaml", "sub/../a.yaml"],
        ),
    ],
)
def test_base_cycle_is_refused_naming_the_chain(tmp_path, files, cycle):
    for name, text in files.items():
        _write(tmp_path, name, text)
    _write(tmp_path, "c.yaml", "SEED: 1\n")
    with pytest.raises(ConfigError) as info:
        get_cfg().merge_from_file(str(tmp_path / cycle[0]))
    assert " -> ".join(str(tmp_path / name) for name in cycle) in str(info.value)
    assert "cycle" in str(info.value)


def test_a_base_shared_by_two_bases_is_no_cycle(tmp_path):
    _write(tmp_path, "common.yaml", "SEED: 3\nSOLVER:\n  MAX_ITER: 10\n")
    _write(tmp_path, "left.yaml", "_BASE_: common.yaml\nSOLVER:\n  BASE_LR: 0.5\n")
    _write(tmp_path, "right.yaml", "_BASE_: common.yaml\nSOLVER:\n  MAX_ITER: 20\n")
    child = _write(tmp_path, "child.yaml", "_BASE_: [left.yaml, right.yaml]\n")
    cfg = get_cfg()
    cfg.merge_from_file(str(child))
    assert (cfg.SEED, cfg.SOLVER.BASE_LR, cfg.SOLVER.MAX_ITER) == (3, 0.5, 20)


def test_key_value_overrides():
    cfg = get_cfg()
    cfg.merge_from_list(
        [
            "MODEL.RESNETS.DEPTH",
            "101",
            "SOLVER.BASE_LR",
            "0.5",
            "MODEL.SWIN.OUT_FEATURES",
            "['res5']",
        ]
    )
    assert cfg.MODEL.RESNETS.DEPTH == 101
    assert cfg.SOLVER.BASE_LR == 0.5
    assert list(cfg.MODEL.SWIN.OUT_FEATURES) == ["res5"]
    with pytest.raises(ConfigError, match="MODEL.RESNETS.DEPHT"):
        cfg.merge_from_list(["MODEL.RESNETS.DEPHT", "101"])
    with pytest.raises(ConfigError, match="MODEL.RESNETS.DEPTH"):
        cfg.merge_from_list(["MODEL.RESNETS.DEPTH", "'fifty'"])
    with pytest.raises(ConfigError, match="KEY VALUE"):
        cfg.merge_from_list(["MODEL.RESNETS.DEPTH"])


def test_frozen_config_cannot_be_merged():
    cfg = get_cfg()
    cfg.freeze()
    with pytest.raises(ConfigError, match="frozen"):
        cfg.merge_from_list(["SEED", "1"])


def test_allow_unsafe_loads_what_the_safe_loader_refuses_as_fvcore_does(tmp_path, monkeypatch):
    """fvcore's meaning of merge_from_file(..., allow_unsafe=True), which detectron2-style code
    passes: the safe loader first; a file it refuses is loaded with yaml.unsafe_load, bases too."""
    _write(tmp_path, "base.yaml", "INPUT:\n  MIN_SIZE_TRAIN: !!python/tuple [256, 512]\n")
    _write(
        tmp_path, "steps.yaml", 'SOLVER:\n  MAX_ITER: !!python/object/apply:eval ["sum([3, 4])"]\n'
    )
    child = _write(tmp_path, "child.yaml", "_BASE_: base.yaml\nSOLVER:\n  BASE_LR: 0.5\n")
    for path in (child, tmp_path / "steps.yaml"):
        with pytest.raises(ConfigError, match=r"(base|steps)\.yaml"):
            get_cfg().merge_from_file(str(path))
    warnings = []  # the "mask2former" logger may not propagate to caplog (setup_logger)
    monkeypatch.setattr(config_module.logger, "warning", lambda *args: warnings.append(args))
    cfg = get_cfg()
    cfg.merge_from_file(str(child), allow_unsafe=True)
    cfg.merge_from_file(str(tmp_path / "steps.yaml"), allow_unsafe=True)
    assert cfg.INPUT.MIN_SIZE_TRAIN == (256, 512) and cfg.SOLVER.BASE_LR == 0.5
    assert cfg.SOLVER.MAX_ITER == 7
    assert [Path(args[1]).name for args in warnings] == ["base.yaml", "steps.yaml"]
    assert all("yaml.unsafe_load" in args[0] for args in warnings)
    safe = get_cfg()
    safe.merge_from_file(
        str(CONFIG_DIR / "ade20k/semantic-segmentation/maskformer2_R50_bs16_160k.yaml"),
        allow_unsafe=True,
    )
    assert list(safe.INPUT.MIN_SIZE_TRAIN) == [int(x * 0.1 * 512) for x in range(5, 21)]
    assert len(warnings) == 2, "a file the safe loader reads is read safely"


def _eval_yaml(tmp_path: Path, expression: str, allow_unsafe: bool = False) -> str:
    """The ConfigError message of a file whose INPUT.MIN_SIZE_TRAIN[1] (line 3) is
    ``expression``."""
    text = (
        f'INPUT:\n  MIN_SIZE_TRAIN:\n    - 1\n    - !!python/object/apply:eval ["{expression}"]\n'
    )
    path = _write(tmp_path, "bounds.yaml", text)
    with pytest.raises(ConfigError) as info:
        get_cfg().merge_from_file(str(path), allow_unsafe=allow_unsafe)
    return str(info.value)


# (expression, bound its message states); each is cheap for Python itself, only past the bound
JUST_PAST_THE_BOUNDS = [
    ("[x for x in range(10**6 + 1)]", "1000000 items"),
    ("list(range(10**6 + 1))", "1000000 items"),
    ("[0] * (10**6 + 1)", "1000000 items"),
    ("'ab' * 500001", "1000000 items"),
    ("2 ** 64", "64 bits"),
    ("7 ** 100000", "64 bits"),
    ("(2**40) * (2**40)", "64 bits"),
    ("int(1e30)", "64 bits"),
    ("round(5, -100000)", "64 digits"),
    ("[[0] * 1000 for x in range(3000)]", "2000000 steps"),
]
# the examples: without the bounds, 3.3 GB and rising, and a CPU spinning until killed
FAR_PAST_THE_BOUNDS = [
    ("[x for x in range(10**12)]", "1000000 items"),
    ("(10**10)**(10**10)", "64 bits"),
    ("[[0] * 10**6 for x in range(10**6)]", "2000000 steps"),
    ("'a' * 10**12", "1000000 items"),
]


@pytest.mark.parametrize("expression, bound", JUST_PAST_THE_BOUNDS + FAR_PAST_THE_BOUNDS)
def test_eval_past_a_bound_names_the_file_the_key_and_the_bound(tmp_path, expression, bound):
    message = _eval_yaml(tmp_path, expression)
    assert "bounds.yaml" in message and "INPUT.MIN_SIZE_TRAIN[1]" in message, message
    assert "line 4" in message and f"over the bound of {bound}" in message, message


def test_eval_past_a_bound_is_refused_even_with_allow_unsafe(tmp_path, monkeypatch):
    """allow_unsafe reads what the restricted language lacks with yaml.unsafe_load; an
    expression of the language past a bound would only exhaust the machine there."""
    monkeypatch.setattr(config_module.yaml, "unsafe_load", pytest.fail)
    message = _eval_yaml(tmp_path, "(10**10)**(10**10)", allow_unsafe=True)
    assert "over the bound of 64 bits" in message


@pytest.mark.parametrize(
    "expression, error",
    [
        ("1 / 0", "ZeroDivisionError"),
        ("[x for x in", "is not a Python expression"),
        ("10 ** 400.0", "OverflowError"),
        ("-" * 200 + "1", "over the bound of 100 levels"),
        ("-" * 5000 + "1", "nested too deeply"),
    ],
)
def test_eval_that_fails_is_a_config_error_naming_file_and_key(tmp_path, expression, error):
    message = _eval_yaml(tmp_path, expression)
    assert "bounds.yaml" in message and "INPUT.MIN_SIZE_TRAIN[1]" in message
    assert error in message, message


def test_eval_within_the_bounds():
    assert safe_eval_expression("[0] * 10**6") == [0] * 10**6
    assert safe_eval_expression("2 ** 63 + (2 ** 63 - 1)") == 2**64 - 1
    assert safe_eval_expression("list(range(3)) + [1.5] + 2 * [7]") == [0, 1, 2, 1.5, 7, 7]
    assert safe_eval_expression("(1, 'a' * 3)") == (1, "aaa")
    assert safe_eval_expression("round(2.675, 2) - -1") == round(2.675, 2) + 1
    with pytest.raises(ExpressionError, match="unsupported operands for Mod: str and int"):
        safe_eval_expression("'%0999999999d' % 1")  # string formatting is not admitted
    assert expression_module.MAX_SEQUENCE_LENGTH == 10**6


def test_every_config_expression_evaluates_as_python_does():
    """The !!python/object/apply:eval expressions of every file in configs/ (published and ours)
    give what Python's eval gives, and every file loads."""
    pattern = re.compile(r'!!python/object/apply:eval \["([^"]*)"\]')
    expressions = set()
    paths = sorted(CONFIG_DIR.rglob("*.yaml"))
    for path in paths:
        expressions.update(pattern.findall(path.read_text()))
        get_cfg().merge_from_file(str(path))
    # 93 published image configs, 14 video configs, the shapes and ytvis_shapes quick starts
    assert len(paths) == 109 and len(expressions) == 5, (len(paths), expressions)
    for expression in expressions:
        assert safe_eval_expression(expression) == eval(expression), expression
