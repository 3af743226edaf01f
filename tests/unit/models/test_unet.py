"""The U-Net architecture: shapes and its receptive-field bound (segpipe/models/unet.py)."""

from __future__ import annotations

import pytest
import torch

from segpipe.models.unet import UNet


def _random_unet(depth: int, in_channels: int = 1, num_classes: int = 2, base: int = 4) -> UNet:
    """A float64 U-Net in eval mode with random weights and non-trivial batch-norm statistics."""
    torch.manual_seed(depth)
    model = UNet(in_channels, num_classes, base=base, depth=depth).double().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.2, 0.2)
                module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.mark.parametrize(
    ("depth", "sizes"),
    [
        (1, [(1, 1), (3, 7)]),
        (2, [(2, 2), (6, 10)]),
        (3, [(4, 4), (12, 20), (36, 8)]),
        (4, [(8, 8), (24, 40)]),
    ],
)
def test_output_shape_equals_input_shape(depth: int, sizes) -> None:
    model = _random_unet(depth, in_channels=3, num_classes=5)
    assert model.size_divisor == 2 ** (depth - 1)
    for height, width in sizes:
        assert height % model.size_divisor == 0
        assert width % model.size_divisor == 0
        with torch.no_grad():
            out = model(torch.randn(2, 3, height, width, dtype=torch.float64))
        assert out.shape == (2, 5, height, width)


def test_receptive_field_radius_formula() -> None:
    assert [UNet(depth=d).receptive_field_radius for d in (1, 2, 3, 4)] == [2, 10, 26, 58]


@pytest.mark.parametrize("depth", [1, 2, 3])
@pytest.mark.parametrize("offset", [0, 1, 3])  # the output pixel's place on the pooling grid
def test_receptive_field_radius_is_an_upper_bound(depth: int, offset: int) -> None:
    """One input pixel changed just past the radius leaves an output pixel unchanged; nearby, changes it."""
    model = _random_unet(depth)
    radius = model.receptive_field_radius
    size = 2 * radius + 16
    size += -size % model.size_divisor
    cy = cx = size // 2 - 4 + offset
    torch.manual_seed(100 + offset)
    image = torch.randn(1, 1, size, size, dtype=torch.float64)

    def output_at(perturbed_at: tuple[int, int] | None) -> torch.Tensor:
        x = image.clone()
        if perturbed_at is not None:
            x[0, 0, perturbed_at[0], perturbed_at[1]] += 50.0
        with torch.no_grad():
            return model(x)[0, :, cy, cx]

    base = output_at(None)
    d = radius + 1
    outside = [
        (cy - d, cx),
        (cy + d, cx),
        (cy, cx - d),
        (cy, cx + d),
        (cy - d, cx - d),
        (cy + d, cx + d),
        (cy + d, cx - radius),
        (0, 0),
        (size - 1, size - 1),
    ]
    for where in outside:
        assert torch.equal(output_at(where), base), where
    for where in [(cy, cx), (cy + 1, cx), (cy, cx - 1)]:
        assert not torch.equal(output_at(where), base), where


@pytest.mark.parametrize("depth", [2, 3])
def test_gradient_support_lies_within_the_radius(depth: int) -> None:
    """Every input pixel with a non-zero gradient for one output pixel is within the radius (Chebyshev)."""
    model = _random_unet(depth)
    radius = model.receptive_field_radius
    size = 2 * radius + 20
    size += -size % model.size_divisor
    for cy in (size // 2, size // 2 + 1):
        x = torch.randn(1, 1, size, size, dtype=torch.float64, requires_grad=True)
        model(x)[0, :, cy, cy].sum().backward()
        ys, xs = torch.nonzero(x.grad[0, 0], as_tuple=True)
        assert len(ys) > 0
        assert int((ys - cy).abs().max()) <= radius
        assert int((xs - cy).abs().max()) <= radius
