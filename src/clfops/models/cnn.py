"""The ~1.2M-parameter CNN of the PyTorch / Lightning MNIST example.

conv(C,32,3) ReLU conv(32,64,3) ReLU maxpool2 dropout(0.25) flatten fc(->128) ReLU dropout(0.5) fc(128,K);
the first fc's input is computed from the image size (64*12*12 = 9216 for 28x28).
"""

from __future__ import annotations

import torch
from torch import nn

from clfops.models import ModelError, check_dropout, check_input, register_model


class MnistCNN(nn.Module):
    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: tuple[int, int],
        dropout: float = 0.25,
        fc_dropout: float = 0.5,
        hidden: int = 128,
    ) -> None:
        super().__init__()
        check_dropout(dropout)
        check_dropout(fc_dropout)
        if hidden < 1:
            raise ModelError(f"hidden must be >= 1, got {hidden}")
        self.in_channels = in_channels
        self.image_size = (int(image_size[0]), int(image_size[1]))
        h, w = ((s - 4) // 2 for s in self.image_size)  # two valid 3x3 convs, then maxpool 2
        if h < 1 or w < 1:
            raise ModelError(f"cnn needs images of at least 6x6, got {self.image_size}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3),
            nn.ReLU(inplace=True),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Dropout(dropout),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * h * w, hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(fc_dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_input(x.shape, self.in_channels, self.image_size, "cnn")
        return self.classifier(self.features(x))


@register_model(fixed_at_build=True, min_size=6)
def cnn(
    in_channels: int,
    num_classes: int,
    image_size: tuple[int, int],
    dropout: float = 0.25,
    fc_dropout: float = 0.5,
    hidden: int = 128,
) -> nn.Module:
    """PyTorch MNIST-example CNN (2 convs, maxpool, fc 128; ~1.2M params on 28x28)."""
    return MnistCNN(in_channels, num_classes, image_size, dropout=dropout, fc_dropout=fc_dropout, hidden=hidden)
