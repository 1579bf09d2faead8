"""fp32 recipe search (2026-12-03, #23): quick_cnn's widths and epochs at a fixed fp32 budget, clfops' math.

    .venv/bin/python benchmarks/recipe_widths.py --w 24 --epochs 5 [--seed 1] [--threads 1] [--ema 0.99]
    .venv/bin/python benchmarks/recipe_widths.py --w 16 --w2 48 --epochs 6      # narrower stem, 48-wide middle
    .venv/bin/python benchmarks/recipe_widths.py --w 24 --noc3 --epochs 6       # without the third conv

What benchmarks/recipe_search.py does for architectures, this does for quick_cnn's widths on an fp32-only CPU:
clfops' split (seeded 54k train / 6k val), flips (p=0.5 per image), batch 128, AdamW (fused) + OneCycle
(pct 0.25), label smoothing 0.1, channels_last, fp32; `--epochs` may be fractional (equal-cost comparisons).
Prints the test accuracy plain, with the test-time flip (clfops' default) and with flip + 1-pixel shifts, the
val accuracy, and with `--ema D` the accuracy of a bias-corrected EMA of the weights. ms/step is the warm
training step. Run it with `--threads 1` two at a time on 2 cores when only accuracies are wanted.
"""

import argparse
import time

import torch
import torch.nn.functional as F
from torch import nn

from clfops.data.sources import load_source
from clfops.hardware import cpu_description


def conv(i: int, o: int) -> nn.Conv2d:
    return nn.Conv2d(i, o, 3, padding=1, bias=False)


def quick(w: int = 32, w2: int | None = None, w3: int | None = None, hidden: int = 128, c3: bool = True):
    """quick_cnn (src/clfops/models/fast.py) with each conv's width free: conv(w) pool BN ReLU, conv(w2) pool BN
    ReLU, [conv(w3) BN ReLU], fc(hidden), fc(10)."""
    w2 = w2 or 2 * w
    w3 = w3 or w2
    layers = [conv(1, w), nn.MaxPool2d(2), nn.BatchNorm2d(w), nn.ReLU()]
    layers += [conv(w, w2), nn.MaxPool2d(2), nn.BatchNorm2d(w2), nn.ReLU()]
    c = w2
    if c3:
        layers += [conv(w2, w3), nn.BatchNorm2d(w3), nn.ReLU()]
        c = w3
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c * 49, hidden), nn.ReLU(), nn.Linear(hidden, 10))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--w", type=int, default=32)
    ap.add_argument("--w2", type=int)
    ap.add_argument("--w3", type=int)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--noc3", action="store_true")
    ap.add_argument("--epochs", type=float, default=4)
    ap.add_argument("--bs", type=int, default=128)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--pct", type=float, default=0.25)
    ap.add_argument("--wd", type=float, default=5e-4)
    ap.add_argument("--ls", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ntrain", type=int, default=54000)
    ap.add_argument("--ema", type=float, default=0)
    ap.add_argument("--sched", default="onecycle")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--shift", type=int, default=0, help="train: random translate +-N px (per batch)")
    a = ap.parse_args()
    torch.manual_seed(a.seed)
    torch.set_num_threads(a.threads)
    s = load_source("fashion_mnist", None)
    g = torch.Generator().manual_seed(a.seed)
    perm0 = torch.randperm(len(s.train.y), generator=g)
    tr, va = perm0[: a.ntrain], perm0[54000:]

    def norm(x):
        return (x.float() / 255 - 0.2860) / 0.3530

    xtr, ytr = norm(s.train.x[tr]), s.train.y[tr]
    xva, yva = norm(s.train.x[va]), s.train.y[va]
    xte, yte = norm(s.test.x), s.test.y
    net = quick(a.w, a.w2, a.w3, a.hidden, not a.noc3).to(memory_format=torch.channels_last)
    spe = len(xtr) // a.bs
    steps = int(a.epochs * spe)
    opt = torch.optim.AdamW(net.parameters(), lr=a.lr, weight_decay=a.wd, fused=True)
    if a.sched == "onecycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, a.lr, total_steps=steps, pct_start=a.pct)
    else:  # linear warmup then linear to 0
        wu = int(a.pct * steps)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda i: (i + 1) / wu if i < wu else max(0.0, (steps - i) / (steps - wu))
        )
    ema = [p.detach().clone() for p in net.state_dict().values()] if a.ema else None
    fwd = net
    step = 0
    t0 = time.perf_counter()
    t20 = None
    while step < steps:
        perm = torch.randperm(len(xtr))
        for k in range(spe):
            if step >= steps:
                break
            j = perm[k * a.bs : (k + 1) * a.bs]
            xb = xtr[j]
            xb = torch.where((torch.rand(len(j)) < 0.5)[:, None, None, None], xb.flip(3), xb)
            if a.shift:
                dx, dy = torch.randint(-a.shift, a.shift + 1, (2,)).tolist()
                xb = torch.roll(xb, (dy, dx), (2, 3))
            loss = F.cross_entropy(fwd(xb.contiguous(memory_format=torch.channels_last)), ytr[j], label_smoothing=a.ls)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if ema is not None:
                d = min(a.ema, (1 + step) / (10 + step))
                with torch.no_grad():
                    for e, v in zip(ema, net.state_dict().values(), strict=False):
                        e.lerp_(v, 1 - d) if v.is_floating_point() else e.copy_(v)
            if step == 20:
                t20 = time.perf_counter()
    train_s = time.perf_counter() - t0
    ms = (time.perf_counter() - t20) / (steps - 20) * 1e3 if t20 is not None else train_s / max(1, steps) * 1e3

    def score(model, x, y):
        model.eval()
        with torch.inference_mode():
            out = {"plain": 0, "flip": 0, "flip+shift": 0}
            for k in range(0, len(x), 256):
                xb = x[k : k + 256].contiguous(memory_format=torch.channels_last)
                yb = y[k : k + 256]
                l0 = model(xb)
                l1 = model(xb.flip(3))
                out["plain"] += (l0.argmax(1) == yb).sum().item()
                lf = l0 + l1
                out["flip"] += (lf.argmax(1) == yb).sum().item()
                ls = lf.clone()
                for dx in (-1, 1):
                    xs = torch.roll(xb, dx, 3)
                    ls += 0.5 * (model(xs) + model(xs.flip(3)))
                out["flip+shift"] += (ls.argmax(1) == yb).sum().item()
        return {k: v / len(y) for k, v in out.items()}

    res = score(net, xte, yte)
    val = score(net, xva, yva)["flip"]
    msg = f"test {res['plain']:.4f} flip {res['flip']:.4f} flip+shift {res['flip+shift']:.4f} val(flip) {val:.4f}"
    if ema is not None:
        net.load_state_dict(dict(zip(net.state_dict().keys(), ema, strict=False)))
        r2 = score(net, xte, yte)
        msg += f" | EMA test flip {r2['flip']:.4f}"
    params = sum(p.numel() for p in net.parameters())
    print(f"{vars(a)} params={params} ms/step={ms:.1f} train_s={train_s:.1f} :: {msg}", flush=True)
    print(f"  [{cpu_description()}]")


if __name__ == "__main__":
    main()
