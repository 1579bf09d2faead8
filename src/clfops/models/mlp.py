"""Multi-layer perceptron (seed 003): flatten C*H*W -> 512 -> 512 -> classes."""

from __future__ import annotations

import torch
from torch import nn

from clfops.models import check_dropout, check_input, check_positive, register_model


class MLP(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        hidden: int = 512,
        depth: int = 2,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        check_positive("hidden", hidden)
        check_positive("depth", depth)
        check_dropout(dropout)
        self.in_channels = in_channels
        self.image_size = (int(image_size[0]), int(image_size[1]))
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_channels * self.image_size[0] * self.image_size[1]
        for _ in range(depth):
            layers += [nn.Linear(width, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = hidden
        layers.append(nn.Linear(width, num_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x.shape, self.in_channels, self.image_size, "mlp")
        return self.net(x)


@register_model(fixed_at_build=True)
def mlp(
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    hidden: int = 512,
    depth: int = 2,
    dropout: float = 0.2,
) -> nn.Module:
    """MLP 784-512-512-10 style: flatten, `depth` hidden ReLU layers of `hidden` units with dropout."""
    return MLP(in_channels, num_classes, image_size, hidden=hidden, depth=depth, dropout=dropout)
