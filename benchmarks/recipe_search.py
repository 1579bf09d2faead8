"""Recipe search for the speed race: architecture variants at equal step budgets, the reference's own loop.

    .venv/bin/python benchmarks/recipe_search.py --arch quick_cnn --epochs 6 --flip [--bs 128 --lr 3e-3]
    .venv/bin/python benchmarks/recipe_search.py --arch pool --epochs 4 --ntrain 54000 --fp32

The loop is raw_reference.py's (in-memory tensors, AdamW wd 5e-4 + OneCycle pct 0.25, label smoothing 0.1,
channels_last, bf16 autocast unless --fp32), so a variant's ms/step and accuracy compare with the reference
and with each other. It trains on the first --ntrain training images (54,000 = clfops' default train split
size) and scores the 10k test set twice: plain, and with test-time flip (mean logits of image + mirror).
Registered clfops models by name; the others are the variants docs/benchmarks.md reports, built here:
  pool: 5 convs in airbench's order (conv, pool, BN, ReLU) with widths w, 2w, 2w, 4w, 4w, global max-pool
  air_relu: air_cnn (conv-BN-act x2, pool, x3) with ReLU     pu: pool with a 2x2 pixel-unshuffle stem
  fast_pool: fast_cnn with pool before BN + ReLU (quick_cnn minus its third conv)
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from clfops.data.sources import load_source
from clfops.hardware import cpu_description
from clfops.models import create_model, list_models, tta_logits


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1, bias=False)


def variant(name: str, w: int) -> nn.Module:
    if name in list_models():
        return create_model(name, 1, 10, (28, 28), {"width": w})
    bn, relu, pool = nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d
    if name == "air_relu":
        layers: list[nn.Module] = []
        c = 1
        for o in (w, 2 * w, 4 * w):
            layers += [_conv(c, o), bn(o), relu(), _conv(o, o), bn(o), relu(), pool(2)]
            c = o
        return nn.Sequential(*layers, nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(c, 10))
    if name in ("pool", "pu"):
        stem = [nn.PixelUnshuffle(2), _conv(4, w)] if name == "pu" else [_conv(1, w), pool(2)]
        return nn.Sequential(
            *stem, bn(w), relu(),
            _conv(w, 2 * w), bn(2 * w), relu(), _conv(2 * w, 2 * w), pool(2), bn(2 * w), relu(),
            _conv(2 * w, 4 * w), bn(4 * w), relu(), _conv(4 * w, 4 * w), pool(2), bn(4 * w), relu(),
            nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(4 * w, 10),
        )  # fmt: skip
    if name == "fast_pool":
        return nn.Sequential(
            _conv(1, w), pool(2), bn(w), relu(), _conv(w, 2 * w), pool(2), bn(2 * w), relu(),
            nn.Flatten(), nn.Linear(2 * w * 49, 128), relu(), nn.Linear(128, 10),
        )  # fmt: skip
    raise SystemExit(f"unknown --arch {name}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="quick_cnn")
    ap.add_argument("--width", type=int, default=32)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--bs", type=int, default=256)
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--flip", action="store_true")
    ap.add_argument("--fp32", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ntrain", type=int, default=54000)
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(2)
    source = load_source("fashion_mnist", None)
    norm = lambda x: (x.float() / 255 - 0.2860) / 0.3530  # noqa: E731 — the reference's constants
    xtr, ytr = norm(source.train.x[: a.ntrain]), source.train.y[: a.ntrain]
    xte, yte = norm(source.test.x), source.test.y
    net = variant(a.arch, a.width).to(memory_format=torch.channels_last)
    steps = a.epochs * (len(xtr) // a.bs)
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=steps, pct_start=0.25)
    bf16, step, t_warm = not a.fp32, 0, 0.0
    t0 = time.perf_counter()
    for _ in range(a.epochs):
        perm = torch.randperm(len(xtr))
        for k in range(len(xtr) // a.bs):
            j = perm[k * a.bs : (k + 1) * a.bs]
            xb = xtr[j]
            if a.flip:  # per image, as clfops' augment.flip_p=0.5
                xb = torch.where((torch.rand(len(j)) < 0.5)[:, None, None, None], xb.flip(3), xb)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = F.cross_entropy(
                    net(xb.contiguous(memory_format=torch.channels_last)), ytr[j], label_smoothing=0.1
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            t_warm = time.perf_counter() if step == 20 else t_warm  # ms/step excludes the first 20 (warm-up)
    train_s = time.perf_counter() - t0
    ms_step = ((time.perf_counter() - t_warm) / (steps - 20) if steps > 20 else train_s / max(1, steps)) * 1e3
    net.eval()
    hits = {False: 0, True: 0}
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        for k in range(0, len(xte), 256):
            xb = xte[k : k + 256].contiguous(memory_format=torch.channels_last)
            for flip in hits:
                hits[flip] += (tta_logits(net, xb, flip).argmax(1) == yte[k : k + 256]).sum().item()
    params = sum(p.numel() for p in net.parameters())
    print(
        f"{a.arch} w{a.width} epochs={a.epochs} bs={a.bs} lr={a.lr} flip={a.flip} bf16={bf16} seed={a.seed} "
        f"ntrain={len(xtr)} params={params} ms/step={ms_step:.1f} train_s={train_s:.1f} "
        f"test_acc={hits[False] / len(yte):.4f} with_test_flip={hits[True] / len(yte):.4f}  [{cpu_description()}]"
    )


if __name__ == "__main__":
    main()
