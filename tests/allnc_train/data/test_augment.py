"""Batched augmentation (allnc_train.data.augment): geometry against per-image references, colour maps
against torchvision's, dtypes, ranges, reproducibility."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from allnc_train.data import augment as A

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _images(n: int = 16, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8, generator=_gen(seed))


# ---------------------------------------------------------------------------------------------
# Standard crop + flip
# ---------------------------------------------------------------------------------------------

def test_marked_pixels_land_where_the_offsets_and_flips_say():
    n, H, W, p = 64, 8, 8, A.CROP_PADDING
    x = torch.zeros(n, 3, H, W, dtype=torch.uint8)
    x[:, 0, 0, 0] = 200  # top-left corner, red channel
    x[:, 1, H - 1, 2] = 100  # a second mark, green channel, to tell a flip from a shift
    top, left, flip = A.crop_flip_params(n, _gen(3), p)
    out = A.crop_flip(x, top, left, flip, p)
    assert out.shape == x.shape and out.dtype == torch.uint8
    assert flip.any() and (~flip).any() and len(set(top.tolist())) > 3
    for i in range(n):
        for ch, (r, c), value in ((0, (0, 0), 200), (1, (H - 1, 2), 100)):
            rr, cc = r + p - int(top[i]), c + p - int(left[i])
            if flip[i]:
                cc = W - 1 - cc
            expected = torch.zeros(H, W, dtype=torch.uint8)
            if 0 <= rr < H and 0 <= cc < W:
                expected[rr, cc] = value
            assert torch.equal(out[i, ch], expected), (i, ch)
        assert not out[i, 2].any()


def test_crop_flip_pads_with_zeros_and_matches_a_per_image_reference():
    x = _images(32) | 1  # no zero pixels: every zero in the output is padding
    top, left, flip = A.crop_flip_params(32, _gen(1))
    out = A.crop_flip(x, top, left, flip)
    padded = F.pad(x, (4, 4, 4, 4))
    for i in range(32):
        ref = padded[i, :, top[i]:top[i] + 32, left[i]:left[i] + 32]
        assert torch.equal(out[i], ref.flip(-1) if flip[i] else ref)
    corner = A.crop_flip(x[:1], torch.tensor([0]), torch.tensor([0]), torch.tensor([False]))
    assert not corner[0, :, :4].any() and not corner[0, :, :, :4].any() and corner[0, :, 4:, 4:].all()


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_random_crop_flip_keeps_dtype_and_is_reproducible(dtype):
    x = _images(8).to(dtype)
    a, b, c = (A.random_crop_flip(x, _gen(s)) for s in (5, 5, 6))
    assert a.dtype == dtype and a.shape == x.shape
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 255


# ---------------------------------------------------------------------------------------------
# SimCLR views
# ---------------------------------------------------------------------------------------------

def test_resized_crop_equals_crop_then_torch_bilinear_resize():
    x = _images(24).float()
    top, left, h, w = A.resized_crop_boxes(24, 32, 32, _gen(2))
    flip = torch.rand(24, generator=_gen(3)) < 0.5
    out = A.resized_crop(x, top, left, h, w, flip)
    for i in range(24):
        t, l, hh, ww = (int(v[i]) for v in (top, left, h, w))
        ref = F.interpolate(x[i:i + 1, :, t:t + hh, l:l + ww], size=(32, 32), mode="bilinear", align_corners=False)[0]
        if flip[i]:
            ref = ref.flip(-1)
        torch.testing.assert_close(out[i], ref, rtol=0, atol=1e-3)


def test_crop_boxes_fit_and_follow_scale_and_ratio():
    top, left, h, w = A.resized_crop_boxes(4000, 32, 32, _gen(0), scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3))
    assert (h >= 1).all() and (w >= 1).all() and (top >= 0).all() and (left >= 0).all()
    assert (top + h <= 32).all() and (left + w <= 32).all()
    area = h * w / 1024
    assert area.min() > 0.15 and area.max() <= 1 and 0.5 < area.mean() < 0.7  # U(0.2, 1) after rounding
    assert ((w / h) > 0.6).all() and ((w / h) < 1.6).all()
    assert torch.equal(top, top.round()) and len(set(top.tolist())) > 10
    # no try can fit: torchvision's fallback, the whole (square) image
    top, left, h, w = A.resized_crop_boxes(5, 32, 32, _gen(0), scale=(2.0, 3.0))
    assert h.tolist() == [32] * 5 and w.tolist() == [32] * 5 and top.tolist() == [0] * 5 and left.tolist() == [0] * 5


def test_simclr_view_shape_range_reproducibility():
    x = _images(32)
    a, b, c = (A.simclr_view(x, _gen(s)) for s in (1, 1, 2))
    assert a.shape == x.shape and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(A.simclr_view(x.float() / 255, _gen(1)), A.simclr_view(x.float() / 255, _gen(1)))
    torch.testing.assert_close(A.simclr_view(x.float() / 255, _gen(1)), a, rtol=0, atol=1e-5)


def test_simclr_view_with_everything_off_is_the_image():
    x = _images(8)
    off = A.SimCLRParams(scale=(1, 1), ratio=(1, 1), flip_p=0, jitter_p=0, grayscale_p=0)
    torch.testing.assert_close(A.simclr_view(x, _gen(0), off), x.float() / 255, rtol=0, atol=1e-6)
    gray = A.simclr_view(x, _gen(0), A.SimCLRParams(grayscale_p=1.0))
    assert torch.allclose(gray[:, 0], gray[:, 1]) and torch.allclose(gray[:, 1], gray[:, 2])


@pytest.mark.parametrize("op", ["brightness", "contrast", "saturation"])
def test_each_colour_factor_matches_torchvision(op):
    """One factor at a time, on mid-range images (no clamping), against torchvision's functional ops."""
    from torchvision.transforms.v2 import functional as TF

    n = 16
    x = 0.35 + 0.3 * torch.rand(n, 3, 8, 8, generator=_gen(4))  # in [0.35, 0.65]: factors in [0.8, 1.2] never clip
    params = A.SimCLRParams(jitter_p=1.0, grayscale_p=0.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.0)
    params = A.SimCLRParams(**{**params.__dict__, op: 0.2})
    u = torch.rand(n, 6, generator=_gen(7))
    M, k, cu = A._colour(u, params)
    out = A.apply_colour(x, M, k, cu)
    factor = 1 + 0.2 * (2 * u[:, {"brightness": 0, "contrast": 1, "saturation": 2}[op]] - 1)
    fn = {"brightness": TF.adjust_brightness, "contrast": TF.adjust_contrast, "saturation": TF.adjust_saturation}[op]
    ref = torch.stack([fn(x[i], float(factor[i])) for i in range(n)])
    torch.testing.assert_close(out, ref, rtol=0, atol=2e-4)  # luma weights 0.2989 / 0.299: same to 1e-4


def test_hue_rotation_keeps_gray_images_and_the_luma():
    gray = torch.rand(8, 1, 6, 6, generator=_gen(0)).expand(8, 3, 6, 6) * 0.5 + 0.25
    color = 0.3 + 0.4 * torch.rand(8, 3, 6, 6, generator=_gen(1))
    params = A.SimCLRParams(jitter_p=1.0, grayscale_p=0.0, brightness=0.0, contrast=0.0, saturation=0.0, hue=0.1)
    M, k, u = A.colour_transforms(8, _gen(2), params)
    torch.testing.assert_close(A.apply_colour(gray, M, k, u), gray, rtol=0, atol=1e-5)
    luma = torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    shifted = A.apply_colour(color, M, k, u)
    assert not torch.allclose(shifted, color, atol=1e-3)
    torch.testing.assert_close((shifted * luma).sum(1), (color * luma).sum(1), rtol=0, atol=1e-4)


def test_cutout_zeroes_one_square_per_image():
    x = torch.ones(32, 3, 16, 16)
    out = A.cutout(x, _gen(0), size=4)
    assert torch.equal(x, torch.ones(32, 3, 16, 16))  # a new tensor
    holes = (out[:, 0] == 0).sum((1, 2))
    assert (holes <= 16).all() and (holes >= 4).all() and (holes == 16).any()
    assert torch.equal(out[:, 0] == 0, out[:, 2] == 0)


# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------

def test_normalize_equals_torchvision_bitwise():
    from torchvision.transforms import v2

    x = _images(4)
    mean, std = A.normalization_tensors("cifar10")
    ref_t = v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(*A.normalization("cifar10"))])
    ref = torch.stack([ref_t(im) for im in x])
    assert torch.equal(A.normalize(x, mean, std), ref)
    out = torch.empty(4, 2, 3, 32, 32)
    A.normalize(x, mean, std, out=out[:, 1])
    assert torch.equal(out[:, 1], ref)
    f = x.float() / 255
    before = f.clone()
    A.normalize(f, mean, std)
    assert torch.equal(f, before)  # float input is not modified


@pytest.mark.gpu
def test_augmentations_run_on_cuda():
    x = _images(16).cuda()
    g = torch.Generator(device="cuda").manual_seed(0)
    mean, std = A.normalization_tensors("cifar10", "cuda")
    for view in (A.random_crop_flip(x, g), A.simclr_view(x, g)):
        assert view.is_cuda and view.shape == x.shape
        assert A.normalize(view, mean, std).is_cuda
    a = A.simclr_view(x, torch.Generator(device="cuda").manual_seed(1))
    assert torch.equal(a, A.simclr_view(x, torch.Generator(device="cuda").manual_seed(1)))
