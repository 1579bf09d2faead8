from __future__ import annotations

from functools import cache
from pathlib import Path

import pytest
import torch

from clfops import config as C
from clfops.config import ConfigError
from clfops.data import DataError
from clfops.data.augment import Augment, AugmentConfig, AugmentError
from clfops.training.build import augment_config
from clfops.training.preview import preview_grid
from conftest import run_cli


@cache
def preset(*overrides: str) -> AugmentConfig:
    """An augment preset as training reads it: configs/augment/*.yaml composed by Hydra (`augment=strong`)."""
    return augment_config(C.compose("train", list(overrides)).augment)


def batch(c: int = 1, h: int = 28, w: int = 28, n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(seed))


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


ALL_ON = [
    AugmentConfig(flip_p=0.5),
    AugmentConfig(crop_pad=4),
    AugmentConfig(rotation_deg=15),
    AugmentConfig(brightness=0.3, contrast=0.3, saturation=0.3),
    AugmentConfig(erasing_p=0.5),
    preset("augment=basic"),
    preset("augment=strong"),
]


@pytest.mark.parametrize("cfg", ALL_ON)
@pytest.mark.parametrize("shape", [(1, 28, 28), (3, 32, 32), (3, 20, 28)])
def test_shape_dtype_range_and_determinism(cfg: AugmentConfig, shape: tuple[int, int, int]) -> None:
    x = batch(*shape)
    x0 = x.clone()
    aug = Augment(cfg)
    y = aug(x, gen(1))
    assert y.shape == x.shape and y.dtype == x.dtype
    assert torch.equal(x, x0), "input must not be modified"
    assert y.min() >= 0 and y.max() <= 1 + 1e-6
    assert torch.equal(y, aug(x, gen(1)))
    assert not torch.equal(y, aug(x, gen(2)))


def test_generator_state_resume() -> None:
    aug = Augment(preset("augment=strong"))
    x = batch(3, 32, 32)
    g = gen(7)
    aug(x, g)
    state = g.get_state()
    y1 = aug(x, g)
    g2 = torch.Generator()
    g2.set_state(state)
    assert torch.equal(y1, aug(x, g2))


def test_identity_fast_path() -> None:
    x = batch()
    g = gen()
    before = g.get_state()
    assert Augment()(x, g) is x
    assert Augment(preset("augment=none"))(x, g) is x
    assert torch.equal(g.get_state(), before)
    assert not preset("augment=none").enabled and preset("augment=basic").enabled


def test_flip_p1_equals_flip() -> None:
    x = batch(3, 32, 32)
    assert torch.equal(Augment(AugmentConfig(flip_p=1.0))(x, gen()), x.flip(3))


def test_crop_pad0_identity_and_crop_is_a_shift() -> None:
    x = batch()
    # flip_p tiny but > 0 so the crop/flip path runs with pad 0
    assert torch.equal(Augment(AugmentConfig(flip_p=1e-9, crop_pad=0))(x, gen()), x)
    y = Augment(AugmentConfig(crop_pad=3))(x, gen(3))
    for i in range(x.shape[0]):  # every output is x shifted by some (dy, dx) in [-3, 3] with zero fill
        found = False
        for dy in range(-3, 4):
            for dx in range(-3, 4):
                ref = torch.nn.functional.pad(x[i], (3, 3, 3, 3))[:, 3 + dy : 3 + dy + 28, 3 + dx : 3 + dx + 28]
                found |= torch.equal(ref, y[i])
        assert found, i


def test_rotation_zero_is_identity() -> None:
    x = batch(3, 32, 32)
    aug = Augment(AugmentConfig(rotation_deg=1e-7))
    torch.testing.assert_close(aug(x, gen()), x, atol=1e-5, rtol=0)


def test_rotation_path_matches_crop_flip_conventions() -> None:
    # with rotation drawn as exactly 0 the bilinear affine path must equal the exact gather path
    x = batch(3, 20, 28)
    aug = Augment(AugmentConfig(crop_pad=3, flip_p=0.5))
    torch.testing.assert_close(aug._affine(x, gen(4)), aug._crop_flip(x, gen(4)), atol=1e-5, rtol=0)


def test_rotation_is_rigid_about_the_centre() -> None:
    # a centred disc is (almost) rotation invariant; an off-centre dot keeps its distance to the centre
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    disc = (((yy - 15.5) ** 2 + (xx - 15.5) ** 2) < 64).float().expand(8, 1, 32, 32).contiguous()
    y = Augment(AugmentConfig(rotation_deg=45))(disc, gen())
    assert (y - disc).abs().mean() < 0.02
    assert not torch.allclose(y, disc)


def test_jitter_1ch_and_3ch() -> None:
    x = batch(1)
    y = Augment(AugmentConfig(saturation=0.5))(x, gen())
    assert torch.equal(y, x)  # saturation is a no-op for grey images
    y = Augment(AugmentConfig(brightness=0.5))(x, gen())
    assert not torch.equal(y, x)
    # brightness is one factor per image: where nothing was clipped, y / x is constant within an image
    i = 0
    keep = (y[i] < 1) & (x[i] > 0.05)
    r = y[i][keep] / x[i][keep]
    torch.testing.assert_close(r, r.mean().expand_as(r), atol=1e-5, rtol=1e-5)
    x3 = batch(3, 8, 8)
    y3 = Augment(AugmentConfig(saturation=1.0))(x3, gen())
    assert y3.shape == x3.shape and not torch.equal(y3, x3)


def test_erasing_changes_only_a_rectangle() -> None:
    x = batch(3, 32, 32, n=64).add_(0.01).clamp_(max=1)  # no exact zeros, so every erased pixel changes
    y = Augment(AugmentConfig(erasing_p=1.0))(x, gen(5))
    changed = (y != x).any(dim=1)  # (B, H, W)
    erased = 0
    for m in changed:
        if not m.any():
            continue
        erased += 1
        rows, cols = m.any(1).nonzero().flatten(), m.any(0).nonzero().flatten()
        box = m[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        assert box.all(), "changed pixels must form a filled rectangle"
        area = box.numel() / m.numel()
        assert 0.01 <= area <= 0.4
    assert erased >= 60  # p=1, and almost every draw fits at 32x32
    assert (y[y != x] == 0).all()
    assert torch.equal(Augment(AugmentConfig(erasing_p=1e-9))(x, gen()), x)


def test_config_validation_and_presets() -> None:
    with pytest.raises(AugmentError, match="flip_p"):
        AugmentConfig(flip_p=2)
    with pytest.raises(DataError, match="crop_pad"):
        AugmentConfig(crop_pad=-1)
    choices = "basic, flip, none, strong"  # the files in configs/augment
    with pytest.raises(ConfigError, match=f"augment=extreme: no such choice; valid augment choices: {choices}"):
        preset("augment=extreme")
    strong = preset("augment=strong")
    assert strong.flip_p == 0.5 and strong.crop_pad == 4 and strong.rotation_deg == 15
    assert strong.brightness == strong.contrast == strong.saturation == 0.2 and strong.erasing_p == 0.3
    assert preset("augment=basic", "augment.flip_p=0") == AugmentConfig(crop_pad=4)
    assert preset("augment=flip") == AugmentConfig(flip_p=0.5, test_flip=True)
    assert preset("augment=none") == AugmentConfig()
    assert AugmentConfig(erasing_scale=[0.1, 0.2]).erasing_scale == (0.1, 0.2)
    with pytest.raises(ConfigError, match=r"augment\.flip: unknown config key"):
        preset("augment.flip=0.5")
    with pytest.raises(AugmentError, match="float"):  # rotation blends pixels: floats only
        Augment(preset("augment=strong"))(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), gen())


@pytest.mark.parametrize("cfg", [AugmentConfig(flip_p=0.5), preset("augment=basic")])
@pytest.mark.parametrize("c", [1, 3])
def test_crop_and_flip_on_the_uint8_batch_give_the_float_paths_images(cfg: AugmentConfig, c: int) -> None:
    """The training step moves pixels on the uint8 batch (cheaper): the same images, the same random draws."""
    x = (batch(c, 28, 28, n=64) * 255).to(torch.uint8)
    aug = Augment(cfg)
    assert aug.moves_pixels_only and not Augment(preset("augment=strong")).moves_pixels_only
    on_uint8, on_float = aug(x, gen(3)), aug(x.float() / 255, gen(3))
    assert on_uint8.dtype == torch.uint8 and not torch.equal(on_uint8, x)
    assert torch.equal(on_uint8.float() / 255, on_float)


@pytest.mark.parametrize("c", [1, 3])
def test_preview_png(tmp_path: Path, c: int) -> None:
    x = (batch(c, 28, 28, n=12) * 255).to(torch.uint8)
    mean, std = ([0.5] * c, [0.25] * c)
    out = preview_grid(x, Augment(preset("augment=strong")), gen(), 10, tmp_path / "sub" / "grid.png", mean, std)
    assert out == tmp_path / "sub" / "grid.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(AugmentError, match="mean/std"):
        preview_grid(x, Augment(), gen(), 4, tmp_path / "x.png", [0.5, 0.5], [1.0, 1.0])


@pytest.mark.slow
def test_augment_preview_command_writes_the_grid(tmp_path: Path) -> None:
    out = tmp_path / "grid" / "strong.png"
    proc = run_cli("augment-preview", "augment=strong", "--out", str(out), "-n", "8")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and str(out) in proc.stdout
    assert not list(out.parent.glob(".*.tmp"))  # written atomically: no temporary left behind
    bad = run_cli("augment-preview", "augment.flip_p=3", "--out", str(tmp_path / "bad.png"))
    assert bad.returncode == 2 and "flip_p" in bad.stderr and "Traceback" not in bad.stderr
