"""The LightningModule: loss, per-stage torchmetrics, optimizer and LR schedule from typed settings.

The network itself is a plain `nn.Module` from `clfops.models`; this class only adds what training needs.
Batches arrive as uint8 (B, C, H, W): conversion to float, augmentation and normalisation happen here, per
batch, on whatever device the batch is on (on a GPU the data set already lives there: data.loader.on_device).
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MeanMetric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassF1Score,
    MulticlassPrecision,
    MulticlassRecall,
)

from clfops.data.augment import Augment
from clfops.errors import RunFailed
from clfops.serving.inference import InputStep
from clfops.training.schedules import OptimizerSettings, SchedulerSettings, build_optimizer, build_scheduler


class NonFiniteLossError(RunFailed, RuntimeError):
    """The loss became NaN/inf: training stops; the last good checkpoint is kept."""


@dataclass
class ModuleSettings:
    num_classes: int
    mean: list[float]
    std: list[float]
    optimizer: OptimizerSettings
    scheduler: SchedulerSettings
    label_smoothing: float  # the config's values (build.py): the defaults live in configs/ only
    channels_last: bool
    seed: int
    classes: list[str]
    # Optimizer steps per epoch, for per-step schedules. Given, not read from trainer.estimated_stepping_batches:
    # that sets the train loader up before a checkpoint's loader position is restored (mid-epoch resume).
    steps_per_epoch: int


def stage_metrics(num_classes: int, prefix: str) -> MetricCollection:
    """acc (micro) and macro precision/recall/F1: the names every stage logs (`val/acc`, `test/f1`)."""
    return MetricCollection(
        {
            "acc": MulticlassAccuracy(num_classes, average="micro"),
            "precision": MulticlassPrecision(num_classes, average="macro"),
            "recall": MulticlassRecall(num_classes, average="macro"),
            "f1": MulticlassF1Score(num_classes, average="macro"),
        },
        prefix=prefix,
    )


def _fresh_float(x: torch.Tensor) -> torch.Tensor:
    """A float32 copy that the caller may modify in place (`.float()` returns a float batch itself)."""
    return x.to(torch.float32, copy=True)


class Classifier(L.LightningModule):
    def __init__(self, net: nn.Module, settings: ModuleSettings, augment: Augment) -> None:
        super().__init__()
        self.net = net
        self.settings = settings
        self.augment = augment
        self._decay_only = False  # OneCycle resumed as the cosine decay it fell back to (on_load_checkpoint)
        self.memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
        self.net.to(memory_format=self.memory_format)
        # Validation feeds the net through serving's one inference path; the train step's fused fast path
        # (augmentation on the batch, then normalisation in place) calls the same `Normalise`.
        self.input_step = InputStep(settings.mean, settings.std, augment.config.test_flip, self.memory_format)
        # Training accuracy as a running count of correct predictions, summed over ranks at the epoch's end:
        # 8 us a step, where a torchmetrics update costs 60 us (0.4 % of a 15 ms step).
        self._correct = torch.zeros((), dtype=torch.long)
        self.val_metrics = stage_metrics(settings.num_classes, "val/")
        # Image-weighted mean loss; like the metrics above it sums across DDP ranks on compute(), so N
        # processes report exactly what one process would.
        self.val_loss = MeanMetric()
        # On the CPU on every device: the draws (a few numbers an image) are copied to the batch's device, so a
        # run augments the same way on a CPU and a GPU and its checkpoints resume on either.
        self.aug_gen = torch.Generator()
        self._loss_sum = torch.zeros(())
        self._loss_count = 0
        self._resumed_mid_epoch = False  # set by on_load_checkpoint: keep the restored epoch state
        self.saving_mid_epoch = False  # set by GracefulStop around its mid-epoch save

    # ----- batches -----------------------------------------------------------------------------------
    def prepare(self, x: torch.Tensor, train: bool) -> torch.Tensor:
        """uint8 batch -> normalised float batch in the configured memory format (+ augmentation when training).

        One float buffer per batch, normalised in place: each fresh 400 KB temporary of a 128-image batch costs
        about as much as the arithmetic on it."""
        if train and self.augment.enabled and self.augment.moves_pixels_only:
            x = self.augment(x, self.aug_gen)  # crop/flip on the uint8 batch: the same images, 4x fewer bytes
        elif train and self.augment.enabled:
            x = self.augment(_fresh_float(x).div_(255.0), self.aug_gen)  # float ops work on [0, 1] (their contract)
            return self.input_step.normalise(x, unit=True).contiguous(memory_format=self.memory_format)
        return self.input_step.model_input(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    def on_train_batch_start(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        self._resumed_mid_epoch = False  # from here on, epochs start fresh

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x, y = batch
        logits = self.net(self.prepare(x, train=True))
        loss = F.cross_entropy(logits, y, label_smoothing=self.settings.label_smoothing)
        # A cheap finite check per step (detect_anomaly costs ~2x): stop before NaN weights are saved.
        if not torch.isfinite(loss):
            raise NonFiniteLossError(
                f"loss became {loss.item()} at epoch {self.current_epoch} step {self.global_step}: "
                "lower optimizer.lr or set trainer.gradient_clip_val"
            )
        self._correct += (logits.detach().argmax(1) == y).sum()
        self._loss_sum = self._loss_sum + loss.detach().float() * len(y)
        self._loss_count += len(y)
        # The batch's loss as `train/loss_step`, sent to the loggers every `trainer.log_every_n_steps`
        # (tracking.log_every_n_steps) steps, so logged only on those steps: each self.log call re-registers a
        # step-only value in Lightning's result collection (~0.4 ms, 3 % of a 15 ms step). Lightning's own test
        # of "is this a logging step" decides. Its own name, not `train/loss`: the epoch mean (every epoch, every
        # run, comparable with val/loss) and these noisy per-batch points would zigzag as one MLflow series.
        connector = getattr(self.trainer, "_logger_connector", None)  # private: if it moves, log every step
        if getattr(connector, "should_update_logs", True):
            self.log("train/loss_step", loss.detach(), on_step=True, on_epoch=False, prog_bar=True)
        return loss

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int) -> None:
        # The test set is scored after fit by clfops.evaluation.evaluate (the same code as `clfops evaluate`).
        x, y = batch
        logits = self.input_step(self.net, x)  # normalise, memory format, test-time flip: as every prediction
        self.val_metrics.update(logits, y)
        self.val_loss.update(F.cross_entropy(logits.float(), y), weight=len(y))

    # ----- epoch hooks ---------------------------------------------------------------------------------
    def on_train_epoch_start(self) -> None:
        if self._resumed_mid_epoch:  # generator and running sums came from the checkpoint (on the CPU)
            self._loss_sum, self._correct = self._loss_sum.to(self.device), self._correct.to(self.device)
            return
        # Augmentation randomness is a function of (seed, epoch, rank): a resumed run replays it exactly,
        # and DDP ranks draw different crops/flips.
        self.aug_gen.manual_seed(self.settings.seed * 100_003 + self.current_epoch + 7_919 * self.global_rank)
        self._loss_sum = torch.zeros((), device=self.device)
        self._loss_count = 0
        self._correct = torch.zeros((), dtype=torch.long, device=self.device)

    def on_train_epoch_end(self) -> None:
        loss = self._loss_sum / max(self._loss_count, 1)
        # Every rank's correct predictions over every rank's images: what one process on all of them would see.
        counts = torch.stack([self._correct.float(), torch.tensor(float(self._loss_count), device=self.device)])
        correct, seen = self.trainer.strategy.reduce(counts, reduce_op="sum").tolist()
        acc = torch.tensor(correct / max(seen, 1.0))
        self.log("train/loss", loss, sync_dist=True)  # the epoch's image-weighted mean: one point per epoch
        self.log("train/acc", acc)  # summed over ranks above: the same value on every rank
        val_acc = self.trainer.callback_metrics.get("val/acc")
        if val_acc is not None:  # how much better the model does on what it was trained on
            self.log("overfit_gap", acc - val_acc.to(acc.device))

    def on_validation_epoch_end(self) -> None:
        # compute() already gathered every rank's counts: identical values on all ranks, no further reduction.
        self.log_dict({**self.val_metrics.compute(), "val/loss": self.val_loss.compute()}, sync_dist=False)
        self.val_metrics.reset()
        self.val_loss.reset()

    # ----- optimisation ---------------------------------------------------------------------------------
    def configure_optimizers(self):  # type: ignore[override]
        optimizer = build_optimizer(self.net, self.settings.optimizer)
        steps = self.settings.steps_per_epoch
        sched = build_scheduler(optimizer, self.settings.scheduler, steps, self.trainer.max_epochs, self._decay_only)
        if sched is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": sched}

    # ----- exact resume: RNGs and the epoch's running state travel as plain tensors/lists ---------------
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        np_state = np.random.get_state()
        checkpoint["rng"] = {
            "torch": torch.get_rng_state(),
            "numpy": [np_state[0], torch.from_numpy(np_state[1].copy()), *map(float, np_state[2:])],
            "python": list(random.getstate()[1]),
            "python_version": random.getstate()[0],
            "augment": self.aug_gen.get_state(),
        }
        # Mid-epoch (SIGTERM) checkpoints also need the epoch's running train loss/accuracy.
        checkpoint["epoch_state"] = {
            "loss_sum": self._loss_sum.detach().cpu(),
            "loss_count": self._loss_count,
            "correct": self._correct.detach().cpu(),
            "mid_epoch": self.saving_mid_epoch,
            "steps_per_epoch": self.settings.steps_per_epoch,  # per process: a resume may change it
        }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Lightning restores the module before configure_optimizers: a run whose OneCycle fell back to its cosine
        # decay (too few steps) keeps that decay when resumed over more epochs, since its optimizer state has
        # none of OneCycle's per-group keys (max_lr …) to continue from.
        saved = checkpoint.get("lr_schedulers", [])
        self._decay_only = self.settings.scheduler.name == "onecycle" and any("T_max" in s for s in saved)
        self._stretch_schedules(checkpoint)
        rng = checkpoint.get("rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            kind, keys, pos, gauss, cached = rng["numpy"]
            np.random.set_state((kind, keys.numpy().astype(np.uint32), int(pos), int(gauss), float(cached)))
            random.setstate((rng["python_version"], tuple(rng["python"]), None))
            self.aug_gen.set_state(rng["augment"])
        state = checkpoint.get("epoch_state")
        if state and state.get("mid_epoch"):
            self._loss_sum = state["loss_sum"]
            self._loss_count = int(state["loss_count"])
            if "correct" in state:
                self._correct = state["correct"]
            else:  # a checkpoint from an earlier clfops: torchmetrics micro-accuracy states (true positives = hits)
                self._correct = state["train_acc"]["tp"].sum().long()
            self._resumed_mid_epoch = True

    # Keys of a scheduler's state that encode the run's length (OneCycle's total_steps and phase ends,
    # cosine's T_max, a warmup's end). A resume with more epochs, or with another count of steps per epoch
    # (another number of processes), keeps the new scheduler's values for these and restores only its position,
    # rescaled to the new steps per epoch: the schedule stretches over the new length from the same point.
    _LENGTH_KEYS = ("total_steps", "_schedule_phases", "T_max", "_milestones")
    _PER_STEP = ("onecycle", "cosine")  # schedules that count optimizer steps (the others count epochs)

    def _stretch_schedules(self, checkpoint: dict) -> None:
        saved = checkpoint.get("clfops", {}).get("config", {}).get("trainer", {})
        old_steps = checkpoint.get("epoch_state", {}).get("steps_per_epoch", self.settings.steps_per_epoch)
        new_steps = self.settings.steps_per_epoch
        if saved.get("max_epochs", self.trainer.max_epochs) == self.trainer.max_epochs and old_steps == new_steps:
            return
        rescale = self.settings.scheduler.name in self._PER_STEP and old_steps != new_steps
        for state in checkpoint.get("lr_schedulers", []):
            for key in self._LENGTH_KEYS:
                state.pop(key, None)
            for part in [state, *state.get("_schedulers", [])] if rescale else []:
                for key in ("last_epoch", "_step_count"):  # floor: never past the new run's last step
                    if key in part:
                        part[key] = part[key] * new_steps // old_steps
