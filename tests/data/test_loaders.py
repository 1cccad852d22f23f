"""Loaders: batching, aspect grouping, worker sharding and seeding, filtering, bad samples."""

import itertools
import logging
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from mask2former.config import get_cfg
from mask2former.data import (
    BadSampleError,
    DatasetCatalog,
    DatasetFromList,
    MapDataset,
    TrainingSampler,
    build_detection_test_loader,
    build_detection_train_loader,
    get_detection_dataset_dicts,
)
from mask2former.data.dataset_mappers import DatasetMapper
from mask2former.utils import comm
from mask2former.utils.env import seed_all_rng
from tests.data._pipeline_samples import semantic_sample

REPO = Path(__file__).resolve().parents[2]


def records(n=12):
    """Half landscape, half portrait, with ids."""
    return [
        {"file_name": f"img{i}.jpg", "image_id": i, "height": 10 + 10 * (i % 2), "width": 15}
        for i in range(n)
    ]


def fake_mapper(d):
    return {**d, "image": torch.zeros(3, d["height"], d["width"], dtype=torch.uint8)}


def test_train_loader_groups_by_aspect_ratio_and_batches():
    loader = build_detection_train_loader(
        records(), mapper=fake_mapper, sampler=TrainingSampler(12, seed=0), total_batch_size=4
    )
    for batch in itertools.islice(iter(loader), 10):
        assert isinstance(batch, list) and len(batch) == 4
        orientations = {b["image"].shape[2] >= b["image"].shape[1] for b in batch}
        assert len(orientations) == 1


def ungrouped_loader(sampler, mapper, batch_size: int, num_workers: int = 0):
    """A train loader over ``records()`` without aspect-ratio grouping."""
    return build_detection_train_loader(
        records(),
        mapper=mapper,
        sampler=sampler,
        total_batch_size=batch_size,
        aspect_ratio_grouping=False,
        num_workers=num_workers,
    )


def test_train_loader_without_grouping_follows_the_sampler():
    sampler = TrainingSampler(12, seed=3)
    loader = ungrouped_loader(sampler, fake_mapper, 3)
    got = [d["image_id"] for batch in itertools.islice(iter(loader), 8) for d in batch]
    assert got == list(itertools.islice(iter(sampler), 24))


def test_total_batch_size_must_divide_over_processes(monkeypatch):
    monkeypatch.setattr(comm, "get_world_size", lambda: 3)
    with pytest.raises(ValueError, match=r"SOLVER.IMS_PER_BATCH \(4\).*\(3\)"):
        build_detection_train_loader(
            records(),
            mapper=fake_mapper,
            sampler=TrainingSampler(12, seed=0, rank=0, world_size=3),
            total_batch_size=4,
        )


def random_mapper(d):
    return {**d, "draw": int(np.random.randint(2**31)), "image": torch.zeros(3, 2, 2)}


def test_workers_split_the_stream_and_are_seeded_apart():
    sampler = TrainingSampler(12, seed=7)
    loader = ungrouped_loader(sampler, random_mapper, 1, num_workers=2)
    items = [batch[0] for batch in itertools.islice(iter(loader), 24)]
    # workers take alternate positions of the sampler's stream, served round-robin
    assert [d["image_id"] for d in items] == list(itertools.islice(iter(sampler), 24))
    draws = [d["draw"] for d in items]
    assert len(set(draws)) == len(draws), "two workers drew the same augmentation randomness"


def draws_mapper(d):
    """The mapper's draws from each generator an augmentation may use."""
    draws = (random.random(), float(np.random.rand()), float(torch.rand(())))
    return {**d, "draws": draws, "image": torch.zeros(3, 2, 2)}


def _worker_draws(seed: int) -> list[tuple]:
    """The first 8 samples' draws through two workers, after seeding the main process."""
    seed_all_rng(seed)
    loader = ungrouped_loader(TrainingSampler(12, seed=7), draws_mapper, 1, num_workers=2)
    return [batch[0]["draws"] for batch in itertools.islice(iter(loader), 8)]


def test_worker_draws_repeat_for_the_main_process_seed(monkeypatch):
    """A worker's generators are seeded from the main process's torch generator when the loader
    is iterated, so a run seeded with SEED (default_setup) repeats its augmentations."""
    monkeypatch.delenv("PYTHONHASHSEED", raising=False)  # seed_all_rng sets it
    first, second, other = _worker_draws(5), _worker_draws(5), _worker_draws(6)
    assert first == second
    assert all(a != b for d1, d2 in zip(first, other) for a, b in zip(d1, d2))


def register(name, dicts):
    if name in DatasetCatalog:
        DatasetCatalog.remove(name)
    DatasetCatalog.register(name, lambda: dicts)


def test_filter_empty_annotations():
    crowd = {"iscrowd": 1, "category_id": 0}
    good = {"iscrowd": 0, "category_id": 0}
    dicts = [
        {"file_name": "a", "annotations": []},
        {"file_name": "b", "annotations": [crowd]},
        {"file_name": "c", "annotations": [crowd, good]},
    ]
    register("pipeline_test_filter", dicts)
    kept = get_detection_dataset_dicts("pipeline_test_filter", filter_empty=True)
    assert [d["file_name"] for d in kept] == ["c"]
    assert len(get_detection_dataset_dicts(["pipeline_test_filter"], filter_empty=False)) == 3
    register("pipeline_test_empty", [])
    with pytest.raises(ValueError, match="pipeline_test_empty.*empty"):
        get_detection_dataset_dicts("pipeline_test_empty")
    with pytest.raises(KeyError, match="no_such_dataset"):
        get_detection_dataset_dicts("no_such_dataset")


def test_train_loader_from_config_filters_and_maps(tmp_path):
    dicts = [semantic_sample(tmp_path, f"s{i}") for i in range(3)]
    register("pipeline_test_sem", dicts)
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = ("pipeline_test_sem",)
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.MAX_SIZE_TRAIN = (32,), 100
    cfg.INPUT.CROP.ENABLED, cfg.INPUT.SIZE_DIVISIBILITY = False, 32
    cfg.SOLVER.IMS_PER_BATCH, cfg.DATALOADER.NUM_WORKERS, cfg.SEED = 2, 0, 0
    batch = next(iter(build_detection_train_loader(cfg)))
    assert len(batch) == 2
    for d in batch:
        assert d["image"].shape[1:] == d["sem_seg"].shape and d["image"].dtype == torch.uint8
        assert d["instances"].gt_masks.shape[1:] == d["sem_seg"].shape
        assert d["file_name"] in {r["file_name"] for r in dicts}


def test_test_loader_from_config_visits_each_image_once(tmp_path):
    dicts = [semantic_sample(tmp_path, f"t{i}") for i in range(5)]
    register("pipeline_test_val", dicts)
    cfg = get_cfg()
    cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MAX_SIZE_TEST, cfg.DATALOADER.NUM_WORKERS = 24, 1000, 0
    loader = build_detection_test_loader(cfg, "pipeline_test_val")
    seen = [batch for batch in loader]
    assert [len(b) for b in seen] == [1] * 5
    assert [b[0]["file_name"] for b in seen] == [d["file_name"] for d in dicts]
    assert all(tuple(b[0]["image"].shape) == (3, 24, 32) for b in seen)
    assert all((b[0]["height"], b[0]["width"]) == (48, 64) for b in seen)


# --------------------------------------------------------------------------- bad samples
def bad_dicts(tmp_path):
    good = semantic_sample(tmp_path, "good")
    missing = {**good, "file_name": str(tmp_path / "gone.png"), "image_id": "gone"}
    return [missing, good]


def test_bad_sample_raises_with_its_file_name(tmp_path):
    dataset = MapDataset(DatasetFromList(bad_dicts(tmp_path)), DatasetMapper(get_cfg(), False))
    with pytest.raises(BadSampleError, match=r"gone\.png: file not found"):
        dataset[0]


def test_bad_sample_is_skipped_counted_and_replaced(tmp_path, caplog):
    dataset = MapDataset(
        DatasetFromList(bad_dicts(tmp_path)), DatasetMapper(get_cfg(), False), skip_bad_samples=True
    )
    with caplog.at_level(logging.WARNING):
        out = dataset[0]
    assert out["image_id"] == "good"
    assert dataset.num_skipped >= 1
    assert "gone.png" in caplog.text and "skipping bad sample" in caplog.text


def test_all_bad_samples_give_up_with_the_error(tmp_path):
    bad = bad_dicts(tmp_path)[:1]
    dataset = MapDataset(
        DatasetFromList(bad),
        DatasetMapper(get_cfg(), False),
        skip_bad_samples=True,
        max_consecutive_skips=5,
    )
    with pytest.raises(BadSampleError, match="gone.png.*the 5 samples tried before it were bad"):
        dataset[0]
    assert dataset.num_skipped == 5


def test_corrupt_training_image_names_the_file_and_the_option_that_skips_it(tmp_path):
    good = semantic_sample(tmp_path, "good")
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(open(good["file_name"], "rb").read()[:100])  # a truncated download
    register("pipeline_test_corrupt", [{**good, "file_name": str(corrupt), "image_id": "bad"}])
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = ("pipeline_test_corrupt",)
    cfg.SOLVER.IMS_PER_BATCH, cfg.DATALOADER.NUM_WORKERS = 1, 0
    with pytest.raises(BadSampleError) as info:
        next(iter(build_detection_train_loader(cfg)))
    message = str(info.value)
    assert message.startswith(f"{corrupt}: cannot decode the image"), message
    assert "set DATALOADER.SKIP_BAD_SAMPLES True" in message
    assert info.value.file_name == str(corrupt)


def test_unexpected_mapper_error_names_the_file():
    def broken(d):
        raise KeyError("segments_info")

    dataset = MapDataset(DatasetFromList(records(2)), broken, skip_bad_samples=True)
    with pytest.raises(RuntimeError, match=r"img1\.jpg.*segments_info"):
        dataset[1]


def test_error_in_a_worker_names_the_file(tmp_path):
    loader = build_detection_test_loader(
        bad_dicts(tmp_path), mapper=DatasetMapper(get_cfg(), False), num_workers=1
    )
    batches = iter(loader)
    with pytest.raises(
        BadSampleError, match=r"gone\.png: file not found.*evaluation does not skip"
    ):
        next(batches)
    batches._shutdown_workers()  # now: a later garbage collection would wait 5 s for it


def test_train_loader_skips_bad_samples_when_configured(tmp_path):
    register("pipeline_test_bad", bad_dicts(tmp_path))
    cfg = get_cfg()
    cfg.DATASETS.TRAIN = ("pipeline_test_bad",)
    cfg.INPUT.MIN_SIZE_TRAIN, cfg.INPUT.CROP.ENABLED = (32,), False
    cfg.SOLVER.IMS_PER_BATCH, cfg.DATALOADER.NUM_WORKERS, cfg.SEED = 2, 0, 0
    cfg.DATALOADER.SKIP_BAD_SAMPLES = True
    batches = list(itertools.islice(iter(build_detection_train_loader(cfg)), 3))
    assert all(d["image_id"] == "good" for b in batches for d in b)
    cfg.DATALOADER.SKIP_BAD_SAMPLES = False
    with pytest.raises(BadSampleError, match="gone.png"):
        list(itertools.islice(iter(build_detection_train_loader(cfg)), 3))


# --------------------------------------------------------------------------- orphan workers
_BLOCKING_LOADER = """
import os, sys, time
from mask2former.data import build_detection_test_loader, build_detection_train_loader

kind, pid_file = sys.argv[1:]

def blocking_mapper(d):  # a worker stuck inside the dataset, where torch's watchdog never looks
    with open(pid_file + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.replace(pid_file + ".tmp", pid_file)
    time.sleep(600)

records = [{"file_name": "x.jpg", "height": 1, "width": 1}]
if kind == "train":
    loader = build_detection_train_loader(
        records, mapper=blocking_mapper, total_batch_size=1, num_workers=1
    )
else:
    loader = build_detection_test_loader(records, mapper=blocking_mapper, num_workers=1)
next(iter(loader))
"""


def _process_state(pid: int):
    """The state letter of ``pid`` ("S", "R", "Z"...), None when it is gone (Linux /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return None


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
@pytest.mark.parametrize("kind", ["train", "test"])
def test_loader_workers_die_with_a_killed_parent(tmp_path, kind):
    script, pid_file = tmp_path / "loader.py", tmp_path / "worker.pid"
    script.write_text(_BLOCKING_LOADER)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    parent = subprocess.Popen([sys.executable, str(script), kind, str(pid_file)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not pid_file.exists():
            assert parent.poll() is None, f"the loader process exited with {parent.returncode}"
            assert time.monotonic() < deadline, "the loader's worker never started"
            time.sleep(0.05)
        worker = int(pid_file.read_text())
        assert _process_state(worker) not in (None, "Z")
    finally:
        parent.kill()
        parent.wait()
    deadline = time.monotonic() + 3
    while _process_state(worker) not in (None, "Z") and time.monotonic() < deadline:
        time.sleep(0.05)
    state = _process_state(worker)
    if state not in (None, "Z"):
        os.kill(worker, signal.SIGKILL)
    assert state in (None, "Z"), f"worker {worker} outlived its killed parent by 3 s"
