from __future__ import annotations

import pytest
import torch

from clfops.models import ModelError, ModelSpec, count_params, create_model, list_models, model_spec, register_model

EXPECTED = {"mlp", "cnn", "resnet18", "fast_cnn", "quick_cnn", "air_cnn"}


def test_registry_lists_all_models() -> None:
    assert set(list_models()) >= EXPECTED
    assert list_models() == sorted(list_models())


@pytest.mark.parametrize(
    ("name", "shape"),
    [(n, s) for n in list_models() for s in [(1, 28, 28), (3, 32, 32)] if s[0] in model_spec(n).channels],
)
def test_forward_backward(name: str, shape: tuple[int, int, int]) -> None:
    spec = model_spec(name)
    assert isinstance(spec, ModelSpec) and spec.description
    c, h, w = shape
    torch.manual_seed(0)
    model = create_model(name, c, 10, (h, w), {})
    model.train()
    x = torch.randn(4, c, h, w)
    out = model(x)
    assert out.shape == (4, 10)
    assert torch.isfinite(out).all()
    out.logsumexp(1).mean().backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert any(g.abs().sum() > 0 for g in grads)
    # channels_last works too (the recipe trains that way)
    model.eval()
    with torch.no_grad():
        y1 = model(x)
        y2 = model.to(memory_format=torch.channels_last)(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(y1, y2, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    ("name", "lo", "hi"),
    [
        ("mlp", 660_000, 680_000),
        ("cnn", 1_190_000, 1_210_000),
        ("resnet18", 11_150_000, 11_200_000),
        ("fast_cnn", 415_000, 425_000),
        ("quick_cnn", 455_000, 462_000),
        ("air_cnn", 250_000, 320_000),
    ],
)
def test_param_counts(name: str, lo: int, hi: int) -> None:
    n = count_params(create_model(name, 1, 10, (28, 28), {}))
    assert lo <= n <= hi, n


def test_exact_reference_counts() -> None:
    assert count_params(create_model("cnn", 1, 10, (28, 28), {})) == 1_199_882
    assert count_params(create_model("fast_cnn", 1, 10, (28, 28), {})) == 421_738
    assert count_params(create_model("quick_cnn", 1, 10, (28, 28), {})) == 458_730
    assert count_params(create_model("mlp", 1, 10, (28, 28), {})) == 669_706


@pytest.mark.parametrize("name", list_models())
def test_deterministic_init(name: str) -> None:
    torch.manual_seed(123)
    a = create_model(name, 1, 10, (28, 28), {}).state_dict()
    torch.manual_seed(123)
    b = create_model(name, 1, 10, (28, 28), {}).state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_model_args_are_used() -> None:
    small = create_model("fast_cnn", 1, 10, (28, 28), {"width": 16, "hidden": 64, "dropout": 0.1})
    assert count_params(small) < count_params(create_model("fast_cnn", 1, 10, (28, 28), {}))
    assert any(isinstance(m, torch.nn.Dropout) and m.p == 0.1 for m in small.modules())
    mlp = create_model("mlp", 1, 10, (28, 28), {"dropout": 0.25})
    assert [m.p for m in mlp.modules() if isinstance(m, torch.nn.Dropout)] == [0.25, 0.25]
    assert model_spec("mlp").defaults["dropout"] == 0.2
    assert model_spec("air_cnn").defaults["width"] == 32


def test_unknown_model_names_choices() -> None:
    with pytest.raises(ModelError, match=r"unknown model 'nope'.*fast_cnn.*resnet18"):
        create_model("nope", 1, 10, (28, 28), {})
    with pytest.raises(ModelError, match="unknown model"):
        model_spec("nope")


def test_bad_args() -> None:
    with pytest.raises(ModelError, match=r"no argument 'widht'.*accepted: dropout, hidden, width"):
        create_model("fast_cnn", 1, 10, (28, 28), {"widht": 8})
    with pytest.raises(ModelError, match=r"argument 'width' must be int"):
        create_model("fast_cnn", 1, 10, (28, 28), {"width": 1.5})
    with pytest.raises(ModelError, match="dropout must be in"):
        create_model("mlp", 1, 10, (28, 28), {"dropout": 1.5})
    with pytest.raises(ModelError, match="set from the data"):
        create_model("mlp", 1, 10, (28, 28), {"num_classes": 3})
    create_model("mlp", 1, 10, (28, 28), {"dropout": 0})  # ints are fine for floats


def test_input_mismatch() -> None:
    model = create_model("mlp", 1, 10, (28, 28), {})
    with pytest.raises(ModelError, match=r"mlp was built for inputs \(B, 1, 28, 28\), got \(2, 1, 32, 32\)"):
        model(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ModelError, match="built for inputs"):
        create_model("fast_cnn", 1, 10, (28, 28), {})(torch.zeros(2, 3, 28, 28))
    with pytest.raises(ModelError, match="built for inputs"):
        create_model("resnet18", 3, 10, (32, 32), {})(torch.zeros(2, 1, 32, 32))
    with pytest.raises(ModelError, match=r"supports 1 or 3 input channel\(s\), the data has 4"):
        create_model("cnn", 4, 10, (28, 28), {})
    with pytest.raises(ModelError, match="at least 8x8"):
        create_model("air_cnn", 1, 10, (4, 4), {})
    # global-pooling models accept other sizes
    assert create_model("air_cnn", 1, 10, (28, 28), {})(torch.zeros(2, 1, 40, 36)).shape == (2, 10)


def test_register_model_rejects_duplicates_and_bad_builders() -> None:
    with pytest.raises(ValueError, match="already registered"):

        @register_model
        def mlp(in_channels: int, num_classes: int, image_size: tuple[int, int]) -> torch.nn.Module:
            raise AssertionError

    with pytest.raises(TypeError, match="must take"):

        @register_model
        def broken_model(num_classes: int) -> torch.nn.Module:
            raise AssertionError

    assert "broken_model" not in list_models()
