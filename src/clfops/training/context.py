"""What one run works with, as two small records instead of ten positional arguments.

`RunSetup` is what `prepare` decides from the config before anything exists on disk or in MLflow (a user
mistake stops here, creating nothing). `RunContext` adds what rank 0 (or a worker rank, with a scratch dir and
no tracker) has once the run exists: run dir, data, MLflow run, stage clock. `Fitted` is what fit hands to test;
`Hardware` is where the Trainer put the run (its MLflow params and summary.json's `hardware`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from omegaconf import DictConfig

from clfops import config as C
from clfops.data import Source
from clfops.data.loader import Splits
from clfops.hardware import configure_cuda, configure_threads, device_name, resolve_precision
from clfops.serving.resolve import ResolvedModel
from clfops.tracking import Tracker, run_dir_lookup
from clfops.training.build import check_settings
from clfops.training.checkpoint import ResumePoint, check_compatible, find_resume
from clfops.training.distributed import Rank, process_rank
from clfops.training.finetune import InitModel, find_parent
from clfops.training.module import Classifier
from clfops.training.progress import quiet_libraries
from clfops.training.recorder import RunLogger
from clfops.training.timings import StageClock, process_age_seconds


@dataclass(frozen=True)
class RunSetup:
    cfg: DictConfig  # resolved; on resume the checkpoint's config plus `overrides`
    overrides: list[str]
    resume: ResumePoint | None
    changed: list[str]  # config keys a resume changes (logged and tagged)
    rank: Rank
    threads: int
    precision: str  # resolved: never "auto"
    startup_s: float | None  # interpreter + imports + config, before `train` (None off Linux)
    clock: StageClock  # started first thing in `train`: its laps are summary.json's stage timings
    parent: ResolvedModel | None = None  # model.init, resolved once (a new run; on resume the checkpoint holds it)


@dataclass(frozen=True)
class RunContext:
    setup: RunSetup
    run_dir: Path  # a scratch dir on ranks > 0 (they write nothing)
    source: Source
    splits: Splits
    tracker: Tracker | None  # None: tracking off, or a rank > 0
    init: InitModel | None = None  # model.init on rank 0 of a new run (DDP copies rank 0's weights to the others)

    @property
    def cfg(self) -> DictConfig:
        return self.setup.cfg

    @property
    def precision(self) -> str:
        return self.setup.precision

    @property
    def resume(self) -> ResumePoint | None:
        return self.setup.resume


@dataclass(frozen=True)
class Fitted:
    trainer: L.Trainer
    checkpoint: ModelCheckpoint  # its best (else last) file holds the weights that get tested and saved
    module: Classifier
    logger: RunLogger
    seconds: float  # wall time of `trainer.fit`, validation included


@dataclass(frozen=True)
class Hardware:
    """Where the Trainer put the run and in what arithmetic (rank 0's device; every rank has one of its kind)."""

    device: str  # "cuda:0", "cpu"
    device_name: str  # "NVIDIA H200"; for a CPU its model name and instruction set
    precision: str  # trainer.precision resolved: "bf16-mixed", "16-mixed", "32-true"
    distributed_backend: str | None  # a DDP run's: "nccl" on GPUs, "gloo" on CPUs (Lightning's choice); else None

    @classmethod
    def of(cls, trainer: L.Trainer, precision: str) -> Hardware:
        """The backend is known once fit has set the process group up (None before)."""
        device = trainer.strategy.root_device
        backend = getattr(trainer.strategy, "process_group_backend", None)
        return cls(str(device), device_name(device), precision, backend)

    def params(self) -> dict[str, str]:
        """The run's MLflow params: precision.resolved, device.resolved, device.name."""
        return {"precision.resolved": self.precision, "device.resolved": self.device, "device.name": self.device_name}


def prepare(cfg: DictConfig, overrides: list[str]) -> RunSetup:
    """Validate and settle the run's settings: resume point (a change that breaks the run is refused), settings
    that contradict each other, rank, threads, precision, seeds. Creates no file and no MLflow run."""
    startup_s = process_age_seconds()  # first thing: the time before `train` was called
    clock = StageClock()
    quiet_libraries()
    resume = find_resume(cfg.resume, run_dir_lookup(cfg.tracking.uri)) if cfg.resume else None
    changed: list[str] = []
    if resume is not None:
        new = C.resume_config(resume.config, overrides)
        changed = check_compatible(resume.config, C.to_container(new))
        cfg = new
        cfg.resume = str(resume.checkpoint)
    check_settings(cfg)
    parent = find_parent(cfg, overrides) if resume is None else None  # sets the parent's model.args
    rank = process_rank(cfg.trainer.devices, cfg.trainer.num_nodes)
    threads = configure_threads(cfg.trainer.num_threads, rank.local_processes)
    precision = resolve_precision(cfg.trainer.precision, cfg.trainer.accelerator)
    configure_cuda(cfg.trainer.accelerator, bool(cfg.deterministic))
    L.seed_everything(cfg.seed, workers=False, verbose=False)
    torch.use_deterministic_algorithms(bool(cfg.deterministic), warn_only=True)
    return RunSetup(cfg, overrides, resume, changed, rank, threads, precision, startup_s, clock, parent)
