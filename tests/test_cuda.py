"""`clfops train` on a CUDA machine with `trainer.accelerator=auto` (the default): the data set moves to the GPU once,
augmentation and normalisation run there, `precision=auto` picks bf16-mixed where the GPU has bf16, DDP talks
NCCL, and the model it saves serves on the CPU. benchmarks/gpu_check.sh runs this file on a lent GPU machine."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import mlflow
import pytest
import torch
from mlflow.tracking import MlflowClient

from clfops.data.sources import default_root
from clfops.evaluation.evaluate import EvalRequest, evaluate
from clfops.serving.inference import predict_logits
from clfops.serving.saved_model import load_model
from clfops.training.train import train
from conftest import TINY, run_cli
from test_model_logging import reference_predictions, sample_images

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="no CUDA device on this machine: the GPU path (device-resident data, on-device augmentation, "
        "bf16-mixed, NCCL) is tested only where one is present",
    ),
]

GPU_RUN = ["trainer.accelerator=auto", "trainer.precision=auto", "augment=basic", "data.train_limit=3000"]


class DeviceProbe(L.Callback):
    """What each training batch saw: where the loader's images lived (and their storage), where the batch and
    the net's input were, in what precision the Trainer ran."""

    def __init__(self) -> None:
        self.data_devices: set[str] = set()  # of the loader's image tensor
        self.data_storages: set[int] = set()  # its data_ptr: one tensor, never copied again
        self.batches: set[str] = set()
        self.net_inputs: set[tuple[str, torch.dtype]] = set()
        self.augment_matches_cpu: list[bool] = []
        self.precision = ""
        self.cudnn_benchmark: bool | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.precision, self.cudnn_benchmark = str(trainer.precision), torch.backends.cudnn.benchmark
        pl_module.net.register_forward_pre_hook(self._seen_input)

    def _seen_input(self, module: torch.nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        if module.training:  # the training step's input: augmented and normalised by Classifier.prepare
            self.net_inputs.add((str(args[0].device), args[0].dtype))

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: Any, batch: Any, batch_idx: int) -> None:
        images = trainer.train_dataloader.split.x
        self.data_devices.add(str(images.device))
        self.data_storages.add(images.data_ptr())
        self.batches.add(str(batch[0].device))
        if batch_idx == 0:  # the run's augmentation on the GPU batch gives the images the CPU would (own generator)
            on_gpu = pl_module.augment(batch[0], torch.Generator().manual_seed(1))
            on_cpu = pl_module.augment(batch[0].cpu(), torch.Generator().manual_seed(1))
            self.augment_matches_cpu.append(on_gpu.device == batch[0].device and torch.equal(on_gpu.cpu(), on_cpu))


def test_auto_trains_on_cuda_and_the_model_serves_on_the_cpu(compose, store: str, tmp_path: Path, monkeypatch) -> None:
    probe = DeviceProbe()
    summary = train(compose("run.name=gpu", "trainer.max_epochs=2", *GPU_RUN), extra_callbacks=[probe])
    bf16 = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"

    # Where it ran, as the run records it: summary.json, the MLflow params, the test report.
    assert summary["hardware"]["device"] == "cuda:0" and summary["hardware"]["precision"] == bf16
    assert summary["hardware"]["device_name"] == torch.cuda.get_device_name(0)
    assert summary["hardware"]["distributed_backend"] is None  # one process, no process group
    params = MlflowClient(store).get_run(summary["run_id"]).data.params
    assert (params["device.resolved"], params["precision.resolved"]) == ("cuda:0", bf16)
    run_dir = Path(summary["run_dir"])
    test_report = json.loads((run_dir / "eval" / "classification_report.json").read_text())
    assert test_report["device"] == "cuda:0"  # the test set was scored on the GPU too
    assert probe.precision == bf16 and probe.cudnn_benchmark is True
    # The images moved to the GPU once (one tensor, one storage, for every batch); batches were gathered there,
    # augmented and normalised there (the net's float input is on the GPU).
    assert probe.data_devices == {"cuda:0"} and len(probe.data_storages) == 1
    assert probe.batches == {"cuda:0"} and probe.net_inputs == {("cuda:0", torch.float32)}
    assert probe.augment_matches_cpu == [True, True]  # the first batch of each epoch
    assert 0.6 < summary["test_acc"] <= 1.0  # 2 epochs on 2,400 images: far above chance (0.1)

    # The saved model is CPU tensors and serves on the CPU.
    net, manifest = load_model(Path(summary["model_dir"]))
    assert {t.device.type for t in net.state_dict().values()} == {"cpu"}
    cpu_eval = evaluate(EvalRequest(run_dir=run_dir, precision="32-true", out=tmp_path / "eval-cpu"))
    assert (cpu_eval.report["device"], cpu_eval.report["images"]) == ("cpu", summary["images"]["test"])
    assert abs(cpu_eval.metrics["eval/acc"] - summary["test_acc"]) <= 0.01  # bf16 on the GPU vs fp32 on the CPU
    # The checkpoint written on the GPU loads on the CPU (`clfops evaluate --checkpoint`): the same weights.
    ckpt = Path(summary["best_checkpoint"])
    from_ckpt = evaluate(EvalRequest(checkpoint=ckpt, precision="32-true", out=tmp_path / "eval-ckpt"))
    assert from_ckpt.metrics["eval/acc"] == cpu_eval.metrics["eval/acc"]
    # The pyfunc model from MLflow (what `mlflow models serve` runs) answers on the CPU as the net does.
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setattr(utils, "_tracking_uri", None)  # the fluent API reads the run's store from the environment
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store)
    images = sample_images(64)
    served = mlflow.pyfunc.load_model(summary["model_uri"]).predict(images)
    assert list(served["class"]) == [manifest.classes[i] for i in reference_predictions(summary["model_dir"], images)]
    # The same net in fp32 on the GPU (TF32) and on the CPU: the same classes, bar near-ties.
    x = torch.from_numpy(images)
    on_gpu = predict_logits(net, manifest, x, 32, "32-true", "cuda").argmax(1)
    on_cpu = predict_logits(net.cpu(), manifest, x, 32, "32-true").argmax(1)
    assert (on_gpu == on_cpu).float().mean().item() >= 0.95

    # DDP on the GPU talks NCCL (one process: Lightning's launcher sets its process group up all the same). A
    # process of its own: a process group, once set up, stays for the life of the process.
    data = f"data.root={default_root('fashion_mnist').resolve()}"  # the folder the run above read
    auto = ["trainer.accelerator=auto", "trainer.precision=auto", "tracking.log_model=false", data]
    ddp = [f"run.root={tmp_path / 'ddp-runs'}", "run.name=ddp", f"tracking.uri={store}", *TINY, *auto]
    result = run_cli("train", *ddp, "trainer.strategy=ddp", "trainer.devices=1", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    hardware = json.loads((tmp_path / "ddp-runs" / "ddp" / "summary.json").read_text())["hardware"]
    assert (hardware["device"], hardware["distributed_backend"], hardware["precision"]) == ("cuda:0", "nccl", bf16)
