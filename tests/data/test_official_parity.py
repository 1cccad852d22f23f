"""The data pipeline gives the published implementation's outputs, bit for bit.

For each case of ``_official_samples`` (every training mapper with crops, colour jitter,
padding, range / choice resizing, enlarging and shrinking; the test mapper; the TTA mapper)
our outputs are hashed field by field and compared with the digests the published code
produced on the same samples and seeds (``tests/reference/official_mappers.json``, its
source named there): images, label maps, classes, masks, boxes, sizes.
"""

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch

from mask2former.config import get_cfg
from mask2former.data import DatasetMapper, DatasetMapperTTA, MetadataCatalog
from mask2former.data.dataset_mappers import DATASET_MAPPER_REGISTRY
from tests.data import _official_samples as S

REFERENCE = json.loads(
    (Path(__file__).resolve().parents[1] / "reference" / "official_mappers.json").read_text()
)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    MetadataCatalog.get("parity_train").set(ignore_label=S.IGNORE)
    return S.make_samples(tmp_path_factory.mktemp("parity"))


def config(overrides):
    cfg = get_cfg()
    cfg.merge_from_list(S.COMMON + overrides)
    return cfg


def seed(value: int) -> None:
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def assert_same(case: str, key: str, mapped: dict) -> None:
    expected = dict(REFERENCE[case][key])
    ours = {name: S.digest(array) for name, array in S.canonical(mapped).items()}
    for name in S.NOT_COMPARED.get(case, ()):
        expected.pop(name, None)
        ours.pop(name, None)
    assert ours.keys() == expected.keys(), f"{case} {key}: fields {sorted(ours)}"
    differ = [name for name in ours if ours[name] != expected[name]]
    assert not differ, f"{case} sample {key}: {differ} differ from the published outputs"


def test_reference_covers_every_case():
    assert set(REFERENCE) - {"_source"} == set(S.CASES) | {"test", "tta"}
    per_case = S.REPEATS * len(S.SAMPLE_SIZES)
    assert all(len(REFERENCE[case]) == per_case for case in S.CASES)


@pytest.mark.parametrize("case", list(S.CASES))
def test_training_mapper_equals_the_published_one(case, records):
    name, overrides = S.CASES[case]
    mapper = DATASET_MAPPER_REGISTRY.get(name)(config(overrides), True)
    for repeat in range(S.REPEATS):
        for index, record in enumerate(records):
            seed(1000 * repeat + index)
            assert_same(case, f"{repeat}_{index}", mapper(S.sample_for(name, record)))


def test_test_and_tta_mappers_equal_the_published_ones(records):
    cfg = config(S.TEST_OVERRIDES)
    test_mapper, tta = DatasetMapper(cfg, False), DatasetMapperTTA(cfg)
    for index, record in enumerate(records):
        seed(index)
        mapped = test_mapper(dict(record))
        assert_same("test", str(index), mapped)
        augmented = tta(mapped)
        assert len(augmented) == 6  # 3 sizes, each also flipped
        for j, copy in enumerate(augmented):
            assert_same("tta", f"{index}_{j}", copy)
