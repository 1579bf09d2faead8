"""`clfops augment-preview`: the augmentation a config applies, as a PNG grid a person can judge.

``preview_grid`` draws the grid (also written into each augmenting run's folder as augment_preview.png);
``write_preview`` is the verb: the config's data set, seed and augmentation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import torch
from omegaconf import DictConfig

from clfops.data.augment import Augment, AugmentError
from clfops.data.sources import load_source


def write_preview(cfg: DictConfig, out: str | Path, count: int) -> Path:
    from clfops.build import augment_config

    source = load_source(cfg.data.name, cfg.data.root, cfg.data.channels, cfg.data.size)
    gen = torch.Generator().manual_seed(int(cfg.seed))
    images = source.train.x[:count]
    mean = cfg.data.mean or [0.5] * source.channels
    std = cfg.data.std or [0.5] * source.channels
    return preview_grid(images, Augment(augment_config(cfg.augment)), gen, count, Path(out), mean, std)


def _per_channel(v: Sequence[float] | float | torch.Tensor, ch: int) -> torch.Tensor:
    t = torch.as_tensor(v, dtype=torch.float32).flatten()
    if t.numel() == 1:
        t = t.expand(ch)
    if t.numel() != ch:
        raise AugmentError(f"mean/std have {t.numel()} values, the images have {ch} channels")
    return t.view(1, ch, 1, 1)


def preview_grid(
    x_uint8: torch.Tensor,
    augment: Augment,
    gen: torch.Generator,
    n: int,
    path: Path,
    mean: Sequence[float] | float | torch.Tensor,
    std: Sequence[float] | float | torch.Tensor,
) -> Path:
    """Write a PNG of ``n`` originals (odd rows) above their augmented versions (even rows).

    Runs the exact training pipeline (uint8 -> [0, 1] -> augment -> normalise with mean/std) and
    de-normalises for display, so what is shown is what the model gets.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if x_uint8.dtype != torch.uint8 or x_uint8.ndim != 4:
        raise AugmentError(
            f"preview_grid expects uint8 (N, C, H, W) images, got {x_uint8.dtype} {tuple(x_uint8.shape)}"
        )
    n = max(1, min(int(n), x_uint8.shape[0]))
    ch = x_uint8.shape[1]
    m, s = _per_channel(mean, ch), _per_channel(std, ch)
    orig = x_uint8[:n].float().div_(255)
    model_input = (augment(orig.clone(), gen) - m) / s
    shown = (model_input * s + m).clamp_(0, 1)

    cols = min(n, 8)
    groups = math.ceil(n / cols)
    fig, axes = plt.subplots(2 * groups, cols, figsize=(1.3 * cols, 1.4 * 2 * groups), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        g, col = divmod(i, cols)
        for row, img in ((2 * g, orig[i]), (2 * g + 1, shown[i])):
            ax = axes[row][col]
            if ch == 1:
                ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            else:
                ax.imshow(img.permute(1, 2, 0).numpy(), interpolation="nearest")
        if col == 0:
            axes[2 * g][0].set_title("original", fontsize=7, loc="left")
            axes[2 * g + 1][0].set_title("augmented", fontsize=7, loc="left")
    fig.suptitle(
        f"{augment.config}\nmodel input range [{model_input.min():.2f}, {model_input.max():.2f}]",
        fontsize=6,
        wrap=True,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path
