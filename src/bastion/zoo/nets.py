"""Small classifiers for 28x28 grey images: four distinct architectures, nothing else in this file.

Every net takes ``(N, in_channels, 28, 28)`` *after* preprocessing and returns logits ``(N, classes)``.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["MLP", "ResNetSmall", "SmallCNN", "WideShallow"]


class MLP(nn.Module):
    """Two hidden ReLU layers on the flattened image."""

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        hidden: tuple[int, int] = (512, 256),
        side: int = 28,
    ):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_channels * side * side, hidden[0]),
            nn.ReLU(),
            nn.Linear(hidden[0], hidden[1]),
            nn.ReLU(),
            nn.Linear(hidden[1], num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class SmallCNN(nn.Module):
    """Two conv-ReLU-maxpool stages (32, 64 channels) and a 128-unit dense layer with dropout."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, side: int = 28):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, 32, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * (side // 4) ** 2, 128),
            nn.ReLU(),
            nn.Dropout(0.25),
            nn.Linear(128, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = (
            nn.Identity()
            if stride == 1 and c_in == c_out
            else nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetSmall(nn.Module):
    """A ResNet-style net: a 3x3 stem and three basic residual blocks (16, 32, 64 channels) with BatchNorm."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, widths: tuple[int, int, int] = (16, 32, 64)):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        self.blocks = nn.Sequential(
            _BasicBlock(widths[0], widths[0], 1),
            _BasicBlock(widths[0], widths[1], 2),
            _BasicBlock(widths[1], widths[2], 2),
        )
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(widths[2], num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class WideShallow(nn.Module):
    """One wide 5x5 conv layer (128 channels), 4x4 max-pooling and a linear read-out."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 128, side: int = 28, kernel: int = 5):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, width, kernel, padding=kernel // 2),
            nn.ReLU(),
            nn.MaxPool2d(4),
            nn.Flatten(),
            nn.Dropout(0.25),
            nn.Linear(width * (side // 4) ** 2, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
