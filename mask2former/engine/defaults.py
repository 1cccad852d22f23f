"""The standard training set-up: command-line parser, run set-up and ``DefaultTrainer``.

``DefaultTrainer(cfg)`` builds model, optimizer, LR scheduler, train loader, checkpointer and
the standard hooks from the config; ``resume_or_load`` then ``train()`` runs it. Subclass and
override the ``build_*`` class methods to change a part.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import OrderedDict
from collections.abc import Iterable
from typing import Any

import torch
from fvcore.nn.precise_bn import get_bn_modules
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..checkpoint import DetectionCheckpointer
from ..config import CfgNode, ConfigError, check_supported
from ..data import (
    build_dataset_mapper,
    build_detection_test_loader,
    build_detection_train_loader,
)
from ..data.datasets import register_folders
from ..evaluation import (
    DatasetEvaluator,
    DatasetEvaluators,
    build_evaluator,
    inference_on_dataset,
    split_by_outputs,
    verify_results,
)
from ..modeling import build_model
from ..solver import build_lr_scheduler, build_optimizer
from ..utils import comm
from ..utils.env import collect_env_info, seed_all_rng, use_deterministic_algorithms
from ..utils.events import CommonMetricPrinter, EventWriter, JSONWriter, TensorboardXWriter
from ..utils.file_io import PathManager
from ..utils.logger import setup_logger
from . import hooks
from .model_kwargs import model_kwargs_from_metadata
from .predictor import DefaultPredictor
from .rng import set_rng_states
from .sync_batchnorm import replace_sync_batchnorm
from .test_time_augmentation import SemanticSegmentorWithTTA
from .train_loop import AMPTrainer, HookBase, SimpleTrainer

logger = logging.getLogger(__name__)

__all__ = [
    "DefaultPredictor",
    "DefaultTrainer",
    "auto_scale_workers",
    "default_argument_parser",
    "default_setup",
    "default_writers",
    "require_config_file",
]


def default_argument_parser(epilog: str | None = None) -> argparse.ArgumentParser:
    """Arguments of ``tools/train_net.py``: config, resume/eval, launch, trailing overrides."""
    parser = argparse.ArgumentParser(
        epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config-file", default="", metavar="FILE", help="path to config file")
    parser.add_argument(
        "--resume", action="store_true", help="continue from the last checkpoint in OUTPUT_DIR"
    )
    parser.add_argument("--eval-only", action="store_true", help="evaluate MODEL.WEIGHTS only")
    parser.add_argument(
        "--num-gpus", type=int, default=1, help="processes per machine (GPUs, or CPU processes)"
    )
    parser.add_argument("--num-machines", type=int, default=1, help="total number of machines")
    parser.add_argument("--machine-rank", type=int, default=0, help="this machine's rank")
    parser.add_argument(
        "--dist-url",
        default="auto",
        help="tcp://HOST:PORT of machine 0 for multi-machine runs; 'auto' picks a local port",
    )
    parser.add_argument(
        "opts",
        default=None,
        nargs=argparse.REMAINDER,
        help="config overrides as KEY VALUE pairs, e.g. SOLVER.MAX_ITER 100",
    )
    return parser


def require_config_file(args: argparse.Namespace) -> str:
    """``args.config_file``, which a run of ``tools/train_net.py`` needs (training, ``--resume``
    and ``--eval-only`` alike): the defaults alone describe no complete model. The parser keeps
    detectron2's empty default, so scripts that build their config in code still use it."""
    if not args.config_file:
        raise ConfigError(
            "no config file: pass --config-file FILE (e.g. --config-file "
            "configs/shapes/mask2former_R18_quickstart.yaml); the defaults alone describe no "
            "complete model"
        )
    return args.config_file


def _write_text(path: str, text: str) -> None:
    with PathManager.open(path, "w") as f:
        f.write(text)


def _check_deterministic(cfg: CfgNode) -> None:
    """Raise :class:`ConfigError` if ``DETERMINISTIC`` is on with a random seed or cudnn
    autotuning, either of which makes runs differ."""
    if not cfg.DETERMINISTIC:
        return
    if cfg.SEED < 0:
        raise ConfigError(
            f"DETERMINISTIC True needs a fixed seed: SEED = {cfg.SEED} draws one from the time "
            "and process id; set SEED to a number >= 0"
        )
    if cfg.CUDNN_BENCHMARK:
        raise ConfigError(
            "DETERMINISTIC True needs CUDNN_BENCHMARK False: cudnn autotuning picks convolution "
            "algorithms by timing them, so two runs may compute differently"
        )


def default_setup(cfg: CfgNode, args: argparse.Namespace | None = None) -> None:
    """Logging, seeding, deterministic algorithms (``DETERMINISTIC``), the dataset folders of
    ``DATASETS.FOLDERS`` registered, and (on rank 0) ``config.yaml`` and ``env.txt`` in
    ``OUTPUT_DIR``.

    With ``DETERMINISTIC`` True (``SEED`` and ``CUDNN_BENCHMARK`` are checked first) this turns
    on torch's deterministic algorithms and sets ``CUBLAS_WORKSPACE_CONFIG`` when unset
    (:func:`mask2former.utils.env.use_deterministic_algorithms`), which must happen before the
    process's first CUDA matrix product; with False torch's settings are left as they are.
    """
    _check_deterministic(cfg)
    output_dir = cfg.OUTPUT_DIR
    rank = comm.get_rank()
    if comm.is_main_process() and output_dir:
        PathManager.mkdirs(output_dir)
    for name in ("mask2former", "fvcore"):
        setup_logger(output_dir or None, distributed_rank=rank, name=name)
    env_info = collect_env_info()
    logger.info("Rank of current process: %d. World size: %d", rank, comm.get_world_size())
    logger.info("Environment info:\n%s", env_info)
    logger.info("Command line arguments: %s", args)
    logger.info("Running with full config:\n%s", cfg.dump())
    if comm.is_main_process() and output_dir:
        _write_text(os.path.join(output_dir, "config.yaml"), cfg.dump())
        _write_text(os.path.join(output_dir, "env.txt"), env_info + "\n")
        command = " ".join([sys.executable] + sys.argv)
        _write_text(os.path.join(output_dir, "command.txt"), command + "\n")
        logger.info("Full config saved to %s", os.path.join(output_dir, "config.yaml"))
    seed = seed_all_rng(None if cfg.SEED < 0 else cfg.SEED + rank)
    logger.info("Using random seed %d", seed)
    register_folders(cfg.DATASETS.FOLDERS)
    if cfg.DETERMINISTIC:
        use_deterministic_algorithms()
        logger.info(
            "Deterministic algorithms on (CUBLAS_WORKSPACE_CONFIG=%s)",
            os.environ["CUBLAS_WORKSPACE_CONFIG"],
        )
    # as detectron2: cudnn autotuning for training only (its overhead does not pay off on a
    # validation set); the flag is harmless without CUDA
    if not getattr(args, "eval_only", False):
        torch.backends.cudnn.benchmark = cfg.CUDNN_BENCHMARK


def default_writers(output_dir: str, max_iter: int) -> list[EventWriter]:
    """Console (with ETA), ``metrics.json`` (JSON lines) and TensorBoard in ``output_dir``."""
    PathManager.mkdirs(output_dir)
    return [
        CommonMetricPrinter(max_iter),
        JSONWriter(os.path.join(output_dir, "metrics.json")),
        TensorboardXWriter(output_dir),
    ]


def _amp_precision(cfg: CfgNode) -> torch.dtype:
    precisions = {"float16": torch.float16, "bfloat16": torch.bfloat16}
    if cfg.SOLVER.AMP.PRECISION not in precisions:
        raise ConfigError(
            f"SOLVER.AMP.PRECISION must be 'float16' or 'bfloat16', got {cfg.SOLVER.AMP.PRECISION!r}"
        )
    return precisions[cfg.SOLVER.AMP.PRECISION]


def create_ddp_model(model: nn.Module) -> nn.Module:
    """Wrap in ``DistributedDataParallel`` when there is more than one process."""
    if comm.get_world_size() == 1:
        return model
    # the device the launcher selected: the local rank, or the only GPU a SLURM task sees
    device = next(model.parameters()).device
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)


def unwrap_model(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, DistributedDataParallel) else model


class DefaultTrainer:
    """Trainer with the standard parts and hooks, all built from ``cfg``.

    Hooks: timer, LR scheduler, precise BN (``TEST.PRECISE_BN``), periodic checkpoints,
    validation loss (``TEST.VAL_LOSS``), evaluation, best checkpoint
    (``SOLVER.BEST_CHECKPOINTER``, ``model_best.pth``) and the metric writers, in that order.
    Checkpoints (``OUTPUT_DIR/model_<iter>.pth``, ``model_final.pth``) hold ``model``,
    ``optimizer``, ``scheduler``, ``grad_scaler`` (float16 AMP), ``iteration`` and each
    process's random generator states.
    """

    def __init__(self, cfg: CfgNode) -> None:
        check_supported(cfg)
        register_folders(cfg.DATASETS.FOLDERS)  # a no-op after default_setup
        cfg = auto_scale_workers(cfg, comm.get_world_size())
        self.cfg = cfg
        model = self.build_model(cfg)
        self.optimizer = self.build_optimizer(cfg, model)
        data_loader = self.build_train_loader(cfg)
        self.model = create_ddp_model(model)
        self._trainer = self._build_step_trainer(cfg, self.model, data_loader, self.optimizer)
        self.scheduler = self.build_lr_scheduler(cfg, self.optimizer)
        checkpointables: dict[str, Any] = {"optimizer": self.optimizer, "scheduler": self.scheduler}
        if isinstance(self._trainer, AMPTrainer) and self._trainer.grad_scaler is not None:
            checkpointables["grad_scaler"] = self._trainer.grad_scaler
        self.checkpointer = DetectionCheckpointer(
            model, cfg.OUTPUT_DIR, save_to_disk=comm.is_main_process(), **checkpointables
        )
        self.start_iter = 0
        self.max_iter = cfg.SOLVER.MAX_ITER
        self._last_eval_results: OrderedDict | None = None
        self._trainer.register_hooks(self.build_hooks())

    @staticmethod
    def _build_step_trainer(cfg, model, data_loader, optimizer) -> SimpleTrainer:
        if cfg.SOLVER.AMP.ENABLED:
            return AMPTrainer(model, data_loader, optimizer, precision=_amp_precision(cfg))
        return SimpleTrainer(model, data_loader, optimizer)

    # ------------------------------------------------------------------ #
    # Resume and train
    # ------------------------------------------------------------------ #
    def resume_or_load(self, resume: bool = True) -> None:
        """``resume`` and a checkpoint in ``OUTPUT_DIR``: load everything from the last one and
        continue after its iteration, with the LR schedule of this run's config (a lower
        ``SOLVER.BASE_LR`` after a divergence applies). Otherwise load only the model from
        ``MODEL.WEIGHTS``."""
        configured_lrs = list(self.scheduler.base_lrs)
        checkpoint = self.checkpointer.resume_or_load(self.cfg.MODEL.WEIGHTS, resume=resume)
        if resume and self.checkpointer.has_checkpoint():
            self.start_iter = checkpoint.get("iteration", -1) + 1
            self._restore_configured_lrs(configured_lrs)
            rng_states = checkpoint.get("rng_states")
            if rng_states is not None and len(rng_states) == comm.get_world_size():
                set_rng_states(rng_states[comm.get_rank()])
            elif rng_states is not None:
                logger.warning(
                    "Checkpoint has random states of %d processes, this run has %d: not restored",
                    len(rng_states),
                    comm.get_world_size(),
                )
            logger.info("Resuming at iteration %d", self.start_iter)

    def _restore_configured_lrs(self, configured: list[float]) -> None:
        """Replace the base LRs loaded with the optimizer and scheduler state by ``configured``.

        The loaded state holds the base LRs of the run that wrote the checkpoint; keeping them
        (as detectron2 does) would silently ignore a changed ``SOLVER.BASE_LR``. Each group's
        current LR is rescaled, so the schedule continues at the loaded iteration.
        """
        loaded = list(self.scheduler.base_lrs)
        if loaded == configured:
            return
        logger.info(
            "Resuming with this config's learning rates (largest base LR %g) instead of the "
            "checkpoint's (%g)",
            max(configured),
            max(loaded),
        )
        self.scheduler.base_lrs = configured
        for group, old, new in zip(self.optimizer.param_groups, loaded, configured):
            group["initial_lr"] = new
            group["lr"] = group["lr"] * new / old if old else new

    def train(self) -> OrderedDict | None:
        """Run training; returns the last evaluation results (main process) or None."""
        self._trainer.train(self.start_iter, self.max_iter)
        if comm.is_main_process() and self._last_eval_results is not None:
            verify_results(self.cfg, self._last_eval_results)
        return self._last_eval_results

    @property
    def iter(self) -> int:
        return self._trainer.iter

    @property
    def storage(self):
        return self._trainer.storage

    # ------------------------------------------------------------------ #
    # Hooks
    # ------------------------------------------------------------------ #
    def build_hooks(self) -> list[HookBase | None]:
        cfg = self.cfg
        result: list[HookBase | None] = [
            hooks.IterationTimer(),
            hooks.LRScheduler(self.optimizer, self.scheduler),
            # before evaluation, on data of a second train loader (as detectron2 does)
            (
                hooks.PreciseBN(
                    cfg.TEST.EVAL_PERIOD,
                    self.model,
                    self.build_train_loader(cfg),
                    cfg.TEST.PRECISE_BN.NUM_ITER,
                )
                if cfg.TEST.PRECISE_BN.ENABLED and get_bn_modules(self.model)
                else None
            ),
        ]
        # on every process: all take part in gathering the RNG states; rank 0 writes
        result.append(hooks.PeriodicCheckpointer(self.checkpointer, cfg.SOLVER.CHECKPOINT_PERIOD))
        result.append(self._build_validation_loss())
        result.append(hooks.EvalHook(cfg.TEST.EVAL_PERIOD, self._evaluate))
        if comm.is_main_process():
            # after the hooks that put its metric (evaluation results are on rank 0 only)
            result.append(self._build_best_checkpointer())
            # last, so that it writes the final evaluation's metrics too
            result.append(hooks.PeriodicWriter(self.build_writers(), period=20))
        return result

    def _build_validation_loss(self) -> hooks.ValidationLoss | None:
        """``TEST.VAL_LOSS``: None when ``PERIOD`` is 0."""
        val_loss = self.cfg.TEST.VAL_LOSS
        if val_loss.PERIOD < 0 or val_loss.NUM_ITER < 0:
            raise ConfigError(
                f"TEST.VAL_LOSS.PERIOD ({val_loss.PERIOD}) and NUM_ITER ({val_loss.NUM_ITER}) "
                "must be >= 0 (PERIOD 0: off; NUM_ITER 0: every batch)"
            )
        if val_loss.PERIOD == 0:
            return None
        loader = self.build_val_loss_loader(self.cfg)
        model = unwrap_model(self.model)
        return hooks.ValidationLoss(val_loss.PERIOD, model, loader, val_loss.NUM_ITER)

    def _build_best_checkpointer(self) -> hooks.BestCheckpointer | None:
        """``SOLVER.BEST_CHECKPOINTER``: None unless ``ENABLED``. A validation-loss metric
        (``val_*``) is compared every ``TEST.VAL_LOSS.PERIOD``, others every
        ``TEST.EVAL_PERIOD``, and both after the last iteration."""
        best = self.cfg.SOLVER.BEST_CHECKPOINTER
        if not best.ENABLED:
            return None
        if not best.METRIC:
            raise ConfigError(
                "SOLVER.BEST_CHECKPOINTER.ENABLED needs SOLVER.BEST_CHECKPOINTER.METRIC: an "
                "evaluation metric such as 'sem_seg/mIoU' or a validation loss such as "
                "'val_total_loss'"
            )
        if best.MODE not in ("max", "min"):
            raise ConfigError(
                f"SOLVER.BEST_CHECKPOINTER.MODE must be 'max' or 'min', got {best.MODE!r}"
            )
        period = self.cfg.TEST.EVAL_PERIOD
        if best.METRIC.startswith(hooks.ValidationLoss.PREFIX):
            period = self.cfg.TEST.VAL_LOSS.PERIOD
            if period == 0:
                raise ConfigError(
                    f"SOLVER.BEST_CHECKPOINTER.METRIC {best.METRIC!r} is a validation loss, but "
                    "TEST.VAL_LOSS.PERIOD is 0 (off)"
                )
        return hooks.BestCheckpointer(period, self.checkpointer, best.METRIC, mode=best.MODE)

    def _evaluate(self) -> OrderedDict | None:
        self._last_eval_results = self.evaluate(self.cfg, unwrap_model(self.model))
        return self._last_eval_results

    def build_writers(self) -> list[EventWriter]:
        return default_writers(self.cfg.OUTPUT_DIR, self.max_iter)

    # ------------------------------------------------------------------ #
    # Parts (override in a subclass to change one)
    # ------------------------------------------------------------------ #
    @classmethod
    def build_model(cls, cfg: CfgNode) -> nn.Module:
        model = build_model(cfg, **model_kwargs_from_metadata(cfg))
        if comm.get_world_size() > 1:
            model = convert_sync_batchnorm(model)
        logger.info("Model:\n%s", model)
        return model

    @classmethod
    def build_optimizer(cls, cfg: CfgNode, model: nn.Module) -> torch.optim.Optimizer:
        return build_optimizer(cfg, model)

    @classmethod
    def build_lr_scheduler(cls, cfg: CfgNode, optimizer: torch.optim.Optimizer):
        return build_lr_scheduler(cfg, optimizer)

    @classmethod
    def build_train_loader(cls, cfg: CfgNode) -> Iterable:
        """``build_detection_train_loader`` with the training mapper of ``DATASETS.TRAIN``
        (``INPUT.DATASET_MAPPER_NAME``, or the video mapper for video datasets)."""
        return build_detection_train_loader(cfg, mapper=build_dataset_mapper(cfg, True))

    @classmethod
    def build_val_loss_loader(cls, cfg: CfgNode) -> Iterable:
        """Batches for the validation loss: ``TEST.VAL_LOSS.DATASETS`` (empty: ``DATASETS.TEST``)
        through the training mapper (targets and training augmentations), each process its
        shard once in order, in batches of the training's images per process."""
        names = tuple(cfg.TEST.VAL_LOSS.DATASETS) or tuple(cfg.DATASETS.TEST)
        if not names:
            raise ConfigError(
                "TEST.VAL_LOSS.PERIOD > 0 needs datasets: TEST.VAL_LOSS.DATASETS or DATASETS.TEST"
            )
        return build_detection_test_loader(
            cfg,
            names,
            mapper=build_dataset_mapper(cfg, True, names),
            batch_size=cfg.SOLVER.IMS_PER_BATCH // comm.get_world_size(),
        )

    @classmethod
    def build_test_loader(cls, cfg: CfgNode, dataset_name: str) -> Iterable:
        """The test mapper of ``dataset_name``: ``DatasetMapper``, or for a video dataset the
        video mapper (one whole video per batch, as ``VideoMaskFormer`` infers)."""
        return build_detection_test_loader(
            cfg, dataset_name, mapper=build_dataset_mapper(cfg, False, dataset_name)
        )

    @classmethod
    def build_evaluator(cls, cfg: CfgNode, dataset_name: str, output_folder: str | None = None):
        if output_folder is None:
            output_folder = os.path.join(cfg.OUTPUT_DIR, "inference", dataset_name)
        return build_evaluator(cfg, dataset_name, output_folder)

    @classmethod
    def test(
        cls,
        cfg: CfgNode,
        model: nn.Module,
        evaluators: DatasetEvaluator | list[DatasetEvaluator | None] | None = None,
    ) -> OrderedDict:
        """Evaluate ``model`` on each of ``DATASETS.TEST`` (detectron2's ``DefaultTrainer.test``).

        ``evaluators``: None builds them with ``cls.build_evaluator``; otherwise one evaluator
        per test dataset, in order (a single evaluator for a single dataset). Returns
        ``{dataset: {task: {metric: v}}}``, or the inner dict directly when there is one
        dataset. A dataset whose evaluator cannot be built (``NotImplementedError``) is skipped
        with a warning. For a :class:`SemanticSegmentorWithTTA` model only the evaluators of
        "sem_seg" run (see :func:`semantic_evaluators_for_tta`).
        """
        names = list(cfg.DATASETS.TEST)
        if isinstance(evaluators, DatasetEvaluator):
            evaluators = [evaluators]
        if evaluators is not None and len(evaluators) != len(names):
            raise ValueError(
                f"{len(evaluators)} evaluators given for {len(names)} datasets in "
                f"DATASETS.TEST {tuple(names)}: pass one per dataset"
            )
        results: OrderedDict = OrderedDict()
        for idx, dataset_name in enumerate(names):
            loader = cls.build_test_loader(cfg, dataset_name)
            evaluator = evaluators[idx] if evaluators is not None else None
            if evaluator is None:
                try:
                    evaluator = cls.build_evaluator(cfg, dataset_name)
                except NotImplementedError as e:
                    logger.warning("No evaluator for %s (%s): skipped", dataset_name, e)
                    results[dataset_name] = {}
                    continue
            if isinstance(model, SemanticSegmentorWithTTA):
                evaluator = semantic_evaluators_for_tta(evaluator, dataset_name)
            results[dataset_name] = inference_on_dataset(model, loader, evaluator)
            if comm.is_main_process():
                logger.info("Evaluation results for %s: %s", dataset_name, results[dataset_name])
        if len(results) == 1:
            return OrderedDict(next(iter(results.values())) or {})
        return results

    @classmethod
    def evaluate(cls, cfg: CfgNode, model: nn.Module) -> OrderedDict:
        """``test``, plus ``test_with_TTA`` when ``TEST.AUG.ENABLED`` (its results keyed
        ``<name>_TTA``): what evaluation during training and ``--eval-only`` report."""
        results = cls.test(cfg, model)
        if cfg.TEST.AUG.ENABLED:
            results.update(cls.test_with_TTA(cfg, model))
        return results

    @classmethod
    def test_with_TTA(cls, cfg: CfgNode, model: nn.Module) -> OrderedDict:
        """Evaluate ``SemanticSegmentorWithTTA(cfg, model)`` (``TEST.AUG``) on ``DATASETS.TEST``
        with evaluators writing to ``OUTPUT_DIR/inference_TTA``; results keyed ``<name>_TTA``
        (task names for one dataset, dataset names for several)."""
        logger.info("Running inference with test-time augmentation ...")
        tta_model = SemanticSegmentorWithTTA(cfg, model)
        output_folder = os.path.join(cfg.OUTPUT_DIR, "inference_TTA")
        evaluators = [
            cls.build_evaluator(cfg, name, output_folder=os.path.join(output_folder, name))
            for name in cfg.DATASETS.TEST
        ]
        results = cls.test(cfg, tta_model, evaluators)
        return OrderedDict((f"{key}_TTA", value) for key, value in results.items())


def semantic_evaluators_for_tta(evaluator: DatasetEvaluator, dataset_name: str) -> DatasetEvaluator:
    """The evaluators in ``evaluator`` that can score test-time augmentation's only output,
    "sem_seg"; the others (panoptic, instance) are left out with a warning.

    Raises ``ValueError`` naming the dataset and evaluators when none is left.
    """
    usable, unusable = split_by_outputs(evaluator, ("sem_seg",))
    dropped = ", ".join(type(e).__name__ for e in unusable)
    if not usable:
        raise ValueError(
            f"test-time augmentation (TEST.AUG.ENABLED) gives only 'sem_seg', but {dataset_name!r} "
            f"is scored by {dropped}, which need other outputs; evaluate a semantic "
            "segmentation dataset or switch on MODEL.MASK_FORMER.TEST.SEMANTIC_ON"
        )
    if unusable:
        logger.warning(
            "Test-time augmentation gives only 'sem_seg': %s on %s left out", dropped, dataset_name
        )
    return usable[0] if len(usable) == 1 else DatasetEvaluators(usable)


def auto_scale_workers(cfg: CfgNode, num_workers: int) -> CfgNode:
    """Rescale a config written for ``SOLVER.REFERENCE_WORLD_SIZE`` processes to ``num_workers``.

    Keeps the images per process: the total batch and the LR scale by ``num_workers / ref``,
    iteration counts (max, warm-up, steps, checkpoint, eval and validation-loss periods) by the
    inverse, so the number of epochs is the same (linear scaling rule). Returns a new config;
    ``cfg`` when ``REFERENCE_WORLD_SIZE`` is 0 or already equal.
    """
    old_world_size = cfg.SOLVER.REFERENCE_WORLD_SIZE
    if old_world_size == 0 or old_world_size == num_workers:
        return cfg
    if cfg.SOLVER.IMS_PER_BATCH % old_world_size != 0:
        raise ConfigError(
            f"SOLVER.IMS_PER_BATCH={cfg.SOLVER.IMS_PER_BATCH} is not divisible by "
            f"SOLVER.REFERENCE_WORLD_SIZE={old_world_size}"
        )
    cfg = cfg.clone()
    frozen = cfg.is_frozen()
    cfg.defrost()
    scale = num_workers / old_world_size
    solver = cfg.SOLVER
    solver.IMS_PER_BATCH = bs = round(solver.IMS_PER_BATCH * scale)
    solver.BASE_LR = solver.BASE_LR * scale
    solver.MAX_ITER = round(solver.MAX_ITER / scale)
    solver.WARMUP_ITERS = round(solver.WARMUP_ITERS / scale)
    solver.STEPS = tuple(round(s / scale) for s in solver.STEPS)
    solver.CHECKPOINT_PERIOD = max(round(solver.CHECKPOINT_PERIOD / scale), 1)
    cfg.TEST.EVAL_PERIOD = round(cfg.TEST.EVAL_PERIOD / scale)
    if cfg.TEST.VAL_LOSS.PERIOD > 0:  # stays on
        cfg.TEST.VAL_LOSS.PERIOD = max(round(cfg.TEST.VAL_LOSS.PERIOD / scale), 1)
    solver.REFERENCE_WORLD_SIZE = num_workers
    logger.info(
        "Auto-scaled the config to %d processes: batch %d, LR %g, %d iterations",
        num_workers,
        bs,
        solver.BASE_LR,
        solver.MAX_ITER,
    )
    if frozen:
        cfg.freeze()
    return cfg


def convert_sync_batchnorm(model: nn.Module) -> nn.Module:
    """Make ``nn.SyncBatchNorm`` layers work in this multi-process run.

    On GPUs torch's ``SyncBatchNorm`` synchronises as is. torch's version needs a GPU, so on CPU
    (gloo) each one is replaced by :class:`CPUSyncBatchNorm`, which all-reduces the statistics.
    """
    if next(model.parameters()).is_cuda:
        return model
    return replace_sync_batchnorm(model)
