"""comm: gathering Python objects over torch.distributed, and leaving it cleanly."""

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from mask2former.utils import comm


def _thread_names() -> list[str]:
    return [open(f"/proc/self/task/{t}/comm").read().strip() for t in os.listdir("/proc/self/task")]


def _worker(rank: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    comm.set_local_process_group(dist.new_group([0, 1]))
    result = {
        "all_gather": comm.all_gather({"rank": rank}),
        "gather": comm.gather(rank * 10),
        "local": [comm.get_local_rank(), comm.get_local_size()],
        # detectron2's plain_train_net.py logs comm.reduce_dict(loss_dict) on the main process
        "reduce_dict": {
            k: v.item()
            for k, v in comm.reduce_dict(
                {"b": torch.tensor(2.0 * rank), "a": torch.tensor(rank + 1.0)}
            ).items()
        },
        "gloo_threads_before": sum("gloo" in name for name in _thread_names()),
    }
    comm.destroy_process_group()
    result["gloo_threads_after"] = sum("gloo" in name for name in _thread_names())
    result["initialized_after"] = dist.is_initialized()
    with open(os.path.join(out_dir, f"{rank}.json"), "w") as f:
        json.dump(result, f)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="counts threads in /proc")
def test_gather_then_destroy_leaves_no_gloo_threads(tmp_path):
    # A reference kept to a destroyed group keeps its gloo threads running until the
    # interpreter exits, which then aborts the process ("terminate called without an active
    # exception"), intermittently failing a run that had succeeded.
    mp.spawn(_worker, args=(str(tmp_path / "init"), str(tmp_path)), nprocs=2)
    results = [json.loads((tmp_path / f"{rank}.json").read_text()) for rank in range(2)]
    for rank, result in enumerate(results):
        assert result["all_gather"] == [{"rank": 0}, {"rank": 1}]
        assert result["gather"] == ([0, 10] if rank == 0 else [])
        assert result["local"] == [rank, 2]
        assert result["reduce_dict"] == (
            {"a": 1.5, "b": 1.0} if rank == 0 else {"a": 2.0, "b": 2.0}
        )
        assert result["gloo_threads_before"] > 0  # the check below can see gloo's threads
        assert result["gloo_threads_after"] == 0
        assert result["initialized_after"] is False
