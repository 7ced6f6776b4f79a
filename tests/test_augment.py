"""Batch augmentation against torchvision's transforms on fixed parameters."""

from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from mnist_drill.config.schema import AugmentConfig
from mnist_drill.training import augment as aug
from mnist_drill.training.augment import affine_theta, augment_batch, warp
from mnist_drill.training.data import load_split

# (angle clockwise in degrees, (tx, ty) pixels, scale, x-shear degrees). Scales such as 0.5 or 2
# are left out on purpose: they put nearest-neighbour samples exactly half-way between pixels,
# where rounding differences of 1e-7 pick either neighbour.
AFFINES = [
    (0.0, (0, 0), 1.0, 0.0),
    (10.0, (0, 0), 1.0, 0.0),
    (-25.0, (2, -3), 1.0, 0.0),
    (7.0, (1, 1), 1.1, 0.0),
    (30.0, (-2, 3), 0.9, 10.0),
    (-45.0, (0, 0), 1.2, -15.0),
    (13.0, (3, -1), 0.8, 20.0),
    (90.0, (0, 0), 1.0, 0.0),
    (180.0, (4, 0), 1.0, 0.0),
]


@pytest.fixture(scope="module")
def digits(data_dir) -> torch.Tensor:
    return load_split(data_dir, train=False, subset=8).images


@pytest.fixture(scope="module")
def noise() -> torch.Tensor:
    return torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def theta(n, angle, translate, scale, shear, size=28):
    return affine_theta(
        torch.full((n,), float(angle)),
        torch.tensor([translate] * n, dtype=torch.float32),
        torch.full((n,), float(scale)),
        torch.full((n,), float(shear)),
        size,
    )


def reference(images, angle, translate, scale, shear, mode, fill=(0.0,)):
    return TF.affine(
        images,
        angle=angle,
        translate=list(translate),
        scale=scale,
        shear=[shear, 0.0],
        interpolation=mode,
        fill=None if fill is None else list(fill),
    )


@pytest.mark.parametrize("angle, translate, scale, shear", AFFINES)
@pytest.mark.parametrize("batch", ["digits", "noise"])
def test_nearest_matches_torchvision_exactly(request, batch, angle, translate, scale, shear):
    images = request.getfixturevalue(batch)
    ours = warp(images, theta(len(images), angle, translate, scale, shear), "nearest")
    assert torch.equal(ours, reference(images, angle, translate, scale, shear, InterpolationMode.NEAREST))


@pytest.mark.parametrize("angle, translate, scale, shear", AFFINES)
def test_bilinear_matches_torchvision_on_digits(digits, angle, translate, scale, shear):
    ours = warp(digits, theta(len(digits), angle, translate, scale, shear), "bilinear")
    expected = reference(digits, angle, translate, scale, shear, InterpolationMode.BILINEAR)
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("angle, translate, scale, shear", AFFINES)
def test_bilinear_matches_torchvision_zero_padding_on_any_image(noise, angle, translate, scale, shear):
    # torchvision's fill=[0] for bilinear also multiplies border pixels by the in-image fraction, which
    # only differs from zero padding where the image border is not black (never for MNIST digits);
    # against torchvision's plain zero padding (fill=None) the match holds for any image.
    ours = warp(noise, theta(len(noise), angle, translate, scale, shear), "bilinear")
    expected = reference(noise, angle, translate, scale, shear, InterpolationMode.BILINEAR, fill=None)
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


@pytest.mark.parametrize("degrees", [5.0, 15.0, -30.0, 90.0])
@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_rotation_is_counter_clockwise_about_the_centre_like_tf_rotate(noise, degrees, mode):
    ours = warp(noise, theta(len(noise), -degrees, (0, 0), 1.0, 0.0), mode)
    expected = TF.rotate(noise, degrees, interpolation=InterpolationMode(mode), fill=None)
    torch.testing.assert_close(ours, expected, atol=1e-4, rtol=0)


def test_rotating_by_90_moves_the_top_row_to_the_left_column():
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 0, :] = 1.0  # the top row
    ours = warp(image, theta(1, -90.0, (0, 0), 1.0, 0.0), "nearest")  # 90 degrees counter-clockwise
    assert torch.equal(ours[0, 0, :, 0], torch.ones(28)) and ours.sum() == 28


def test_translation_is_in_pixels_right_and_down():
    image = torch.zeros(1, 1, 28, 28)
    image[0, 0, 10, 10] = 1.0
    ours = warp(image, theta(1, 0.0, (3, -2), 1.0, 0.0), "nearest")
    assert ours[0, 0, 8, 13] == 1.0 and ours.sum() == 1.0


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_black_fill(mode):
    ones = torch.ones(1, 1, 28, 28)
    rotated = warp(ones, theta(1, 45.0, (0, 0), 1.0, 0.0), mode)
    for corner in (rotated[0, 0, 0, 0], rotated[0, 0, 0, -1], rotated[0, 0, -1, 0], rotated[0, 0, -1, -1]):
        assert corner == 0.0
    assert rotated[0, 0, 14, 14] == 1.0  # the centre stays


def test_identity_leaves_images_alone(noise):
    assert torch.equal(warp(noise, theta(len(noise), 0.0, (0, 0), 1.0, 0.0), "nearest"), noise)


# ---------------------------------------------------------------- augment_batch


def test_disabled_config_returns_the_input_unchanged(noise):
    cfg = AugmentConfig()
    assert not cfg.enabled
    assert augment_batch(noise, cfg) is noise


@pytest.mark.parametrize(
    "cfg",
    [
        AugmentConfig(rotation=15.0),
        AugmentConfig(rotation=10.0, translate=0.1, scale=(0.9, 1.1), shear=10.0),
        AugmentConfig(rotation=7.0, interpolation="bilinear"),
        AugmentConfig(brightness=0.5),
        AugmentConfig(contrast=0.5),
        AugmentConfig(rotation=10.0, brightness=0.3, contrast=0.3),
    ],
)
def test_augmented_batches_stay_images(digits, cfg):
    torch.manual_seed(0)
    batch = digits[:1].expand(16, -1, -1, -1).contiguous()  # 16 copies of one digit
    out = augment_batch(batch, cfg)
    assert cfg.enabled
    assert out.shape == batch.shape and out.dtype == batch.dtype
    assert out.min() >= 0.0 and out.max() <= 1.0
    assert torch.equal(batch, digits[:1].expand(16, -1, -1, -1))  # the input is not modified
    # every sample gets its own transform, so the copies come out different (nearest-neighbour
    # rotations a fraction of a degree apart can still give the same pixels, so not all 16)
    assert len({tuple(row.tolist()) for row in out.flatten(1)}) >= 8


def test_the_same_seed_gives_the_same_batch(digits):
    cfg = AugmentConfig(rotation=10.0, translate=0.1, brightness=0.2)
    torch.manual_seed(3)
    first = augment_batch(digits, cfg)
    torch.manual_seed(3)
    assert torch.equal(augment_batch(digits, cfg), first)


def test_random_parameters_follow_torchvision_ranges(digits, monkeypatch):
    seen = {}
    real = aug.affine_theta

    def spy(angle, translate, scale, shear, size):
        seen.update(angle=angle, translate=translate, scale=scale, shear=shear, size=size)
        return real(angle, translate, scale, shear, size)

    monkeypatch.setattr(aug, "affine_theta", spy)
    torch.manual_seed(0)
    batch = digits[:1].expand(512, -1, -1, -1)
    augment_batch(batch, AugmentConfig(rotation=10.0, translate=0.1, scale=(0.9, 1.1), shear=5.0))
    assert seen["size"] == 28
    assert len(seen["angle"].unique()) == 512 and len(seen["scale"].unique()) == 512  # one draw per sample
    assert seen["angle"].abs().max() <= 10.0 and seen["angle"].min() < -8 and seen["angle"].max() > 8
    max_shift = round(0.1 * 28)  # torchvision: round(U(-t * width, t * width)), whole pixels
    assert seen["translate"].shape == (512, 2)
    assert torch.equal(seen["translate"], seen["translate"].round())
    assert seen["translate"].abs().max() <= max_shift and set(seen["translate"].unique().tolist()) == set(
        range(-max_shift, max_shift + 1)
    )
    assert seen["scale"].min() >= 0.9 and seen["scale"].max() <= 1.1
    assert seen["shear"].abs().max() <= 5.0


@pytest.mark.parametrize("factor", [0.6, 1.0, 1.4])
def test_brightness_is_torchvision_adjust_brightness(digits, monkeypatch, factor):
    calls = []

    def fixed(n, low, high, device):
        calls.append((low, high))
        return torch.full((n,), factor, device=device)

    monkeypatch.setattr(aug, "_uniform", fixed)
    out = augment_batch(digits, AugmentConfig(brightness=0.4))
    assert calls == [(pytest.approx(0.6), pytest.approx(1.4))]  # ColorJitter(brightness=0.4)
    torch.testing.assert_close(out, TF.adjust_brightness(digits, factor), atol=1e-6, rtol=0)


@pytest.mark.parametrize("factor", [0.5, 1.0, 1.5])
def test_contrast_is_torchvision_adjust_contrast(digits, monkeypatch, factor):
    calls = []

    def fixed(n, low, high, device):
        calls.append((low, high))
        return torch.full((n,), factor, device=device)

    monkeypatch.setattr(aug, "_uniform", fixed)
    out = augment_batch(digits, AugmentConfig(contrast=0.5))
    assert calls == [(pytest.approx(0.5), pytest.approx(1.5))]
    expected = torch.stack([TF.adjust_contrast(img, factor) for img in digits])  # per image, its own mean
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_brightness_factors_differ_per_sample(digits):
    torch.manual_seed(0)
    batch = digits[:1].expand(8, -1, -1, -1)
    out = augment_batch(batch, AugmentConfig(brightness=0.5))
    # each output is the input times its own factor (before clamping at 1)
    ratios = [(o.sum() / batch[0].sum()).item() for o in out]
    assert len(set(round(r, 6) for r in ratios)) == 8 and all(0.5 - 1e-6 <= r <= 1.5 for r in ratios)


def test_uniform_range():
    torch.manual_seed(0)
    values = aug._uniform(10_000, -3.0, 5.0, "cpu")
    assert values.min() >= -3.0 and values.max() < 5.0
    assert values.mean().item() == pytest.approx(1.0, abs=0.1)
