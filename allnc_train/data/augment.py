"""Batched image augmentation: pure functions of image batches and a torch.Generator.

Every function takes a whole batch (N, 3, H, W) and draws its randomness for all N images at once
from the generator it is given (on the generator's device; the draws then move to the images'
device), so a fixed generator state gives the same output, on the CPU bitwise, and no function loops
over samples in Python. Everything runs on CPU and CUDA tensors alike.

- :func:`random_crop_flip`: the standard CIFAR augmentation (He et al. 2016; LDAM-DRW's recipe):
  pad 4 pixels of zeros on each side, crop the original size at a uniform offset, flip left-right
  with probability 1/2. Exact integer gathers, so it equals torchvision's ``RandomCrop(32,
  padding=4)`` + ``RandomHorizontalFlip()`` for the same offsets and flips; uint8 or float.
- :func:`simclr_view`: a SimCLR-style view (Chen et al. 2020): random resized crop, flip, colour
  jitter, random grayscale, as :class:`SimCLRParams` names them; :data:`SIMCLR_CIFAR` holds the CIFAR
  settings, :data:`SIMCLR_IMAGENET` the ImageNet ones (used by the DataLoader path in ``data.py``).
- :func:`cutout`: optional square occlusion (DeVries & Taylor 2017); no recipe here applies it.
- :func:`normalize`: uint8 -> float in [0, 1] -> ``(x - mean) / std``, with torchvision's own
  arithmetic (``ToDtype(scale=True)`` then ``Normalize``), so it equals the DataLoader path bitwise.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from nctools.io.images import normalization

CROP_PADDING = 4  # pixels of zero padding of the standard CIFAR crop (He et al. 2016, Sec. 4.2)
GRAY_WEIGHTS = (0.2989, 0.587, 0.114)  # ITU-R 601-2 luma, torchvision's rgb_to_grayscale weights
# RGB -> YIQ (NTSC); Y uses the 601 luma weights. Hue jitter rotates the (I, Q) chroma plane.
_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


@dataclass(frozen=True)
class SimCLRParams:
    """The random transformations of one SimCLR view and their settings.

    SimCLR (Chen et al. 2020, "A Simple Framework for Contrastive Learning of Visual Representations",
    Appendix A and the CIFAR-10 settings of its code, ``--color_jitter_strength=0.5 --use_blur=False``):

    - ``scale``: range of the crop's area as a share of the image (SimCLR: (0.08, 1); for 32-pixel
      CIFAR images we use (0.2, 1), the range of the CIFAR recipe of supervised contrastive learning,
      Khosla et al. 2020, so a crop keeps enough of a tiny image to name its class);
    - ``ratio``: range of the crop's aspect ratio w / h, drawn log-uniformly (SimCLR and Inception: 3/4 to 4/3);
    - ``flip_p``: probability of a left-right flip (SimCLR: 0.5);
    - ``jitter_p``: probability of the colour jitter (SimCLR: 0.8);
    - ``brightness``, ``contrast``, ``saturation``, ``hue``: colour-jitter strengths; a factor is drawn
      uniformly from [1 - s, 1 + s] (hue: a shift in [-s, s] of a full turn). SimCLR uses
      (0.8 s, 0.8 s, 0.8 s, 0.2 s) for colour strength s: s = 1 on ImageNet, s = 0.5 on CIFAR-10,
      i.e. (0.4, 0.4, 0.4, 0.1);
    - ``grayscale_p``: probability of converting the view to grayscale (SimCLR: 0.2);
    - ``blur_p``: probability of a Gaussian blur, kernel 10% of the image side, sigma in [0.1, 2]
      (SimCLR on ImageNet: 0.5; on CIFAR none). Only the DataLoader path (torchvision) blurs; the
      batched :func:`simclr_view` has no blur, and the CIFAR settings need none.
    """

    scale: tuple[float, float] = (0.2, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter_p: float = 0.8
    brightness: float = 0.4
    contrast: float = 0.4
    saturation: float = 0.4
    hue: float = 0.1
    grayscale_p: float = 0.2
    blur_p: float = 0.0


SIMCLR_CIFAR = SimCLRParams()
SIMCLR_IMAGENET = SimCLRParams(scale=(0.08, 1.0), brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2, blur_p=0.5)


# ---------------------------------------------------------------------------------------------
# Random draws: on the generator's device, then to the images' device
# ---------------------------------------------------------------------------------------------

def _rand(generator: torch.Generator, shape: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """Uniform [0, 1) float32 draws."""
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


def _randint(generator: torch.Generator, high: int, n: int, device: torch.device) -> torch.Tensor:
    """n integers uniform in 0..high-1 (int64)."""
    return torch.randint(0, high, (n,), generator=generator, device=generator.device).to(device)


# ---------------------------------------------------------------------------------------------
# The standard crop + flip
# ---------------------------------------------------------------------------------------------

def crop_flip_params(n: int, generator: torch.Generator, padding: int = CROP_PADDING,
                     device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(top, left, flip) for :func:`crop_flip`: offsets uniform in 0..2*padding, flips with probability 1/2.

    Drawn in this order: n tops, n lefts, n flips.
    """
    device = torch.device(device) if device is not None else generator.device
    top = _randint(generator, 2 * padding + 1, n, device)
    left = _randint(generator, 2 * padding + 1, n, device)
    flip = _rand(generator, (n,), device) < 0.5
    return top, left, flip


def crop_flip(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor,
              padding: int = CROP_PADDING) -> torch.Tensor:
    """Pad ``images`` (N, C, H, W) with ``padding`` zeros on every side, take the (H, W) window at
    (``top[i]``, ``left[i]``) of the padded image i, and mirror it left-right where ``flip[i]``.

    Same dtype and shape as ``images``; exact (gathers, no arithmetic). A pixel (r, c) of image i
    lands at (r + padding - top[i], c + padding - left[i]) before the flip, c' = W - 1 - c after it.

    >>> x = torch.arange(4, dtype=torch.uint8).view(1, 1, 2, 2)
    >>> crop_flip(x, torch.tensor([1]), torch.tensor([2]), torch.tensor([False]), padding=1).tolist()
    [[[[1, 0], [3, 0]]]]
    """
    n, c, h, w = images.shape
    dev = images.device
    padded = F.pad(images, (padding, padding, padding, padding))  # zeros
    hp, wp = h + 2 * padding, w + 2 * padding
    # rows: one index_select of whole padded rows; columns: one gather, mirrored where flipped
    planes = torch.arange(n * c, device=dev).view(n, c, 1) * hp
    rows = (planes + (top.view(n, 1, 1) + torch.arange(h, device=dev))).view(-1)  # (N * C * H,)
    strips = padded.reshape(n * c * hp, wp).index_select(0, rows).view(n, c, h, wp)
    ar = torch.arange(w, device=dev)
    cols = left.view(n, 1) + torch.where(flip.view(n, 1), w - 1 - ar, ar)  # (N, W)
    return strips.gather(3, cols.view(n, 1, 1, w).expand(n, c, h, w))


def random_crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = CROP_PADDING) -> torch.Tensor:
    """:func:`crop_flip` at offsets and flips drawn from ``generator`` (:func:`crop_flip_params`)."""
    top, left, flip = crop_flip_params(len(images), generator, padding, images.device)
    return crop_flip(images, top, left, flip, padding)


# ---------------------------------------------------------------------------------------------
# SimCLR views
# ---------------------------------------------------------------------------------------------

def _boxes(u: torch.Tensor, height: int, width: int, scale: tuple[float, float], ratio: tuple[float, float]
           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crop boxes from uniform draws u (n, 2 * attempts + 2): see :func:`resized_crop_boxes`."""
    attempts = (u.shape[1] - 2) // 2
    area = height * width * (scale[0] + (scale[1] - scale[0]) * u[:, :attempts])
    lo, hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(lo + (hi - lo) * u[:, attempts:2 * attempts])
    w = torch.round(torch.sqrt(area * aspect))
    h = torch.round(torch.sqrt(area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.to(torch.uint8).argmax(1, keepdim=True)  # the first try that fits (0 when none does)
    w, h = w.gather(1, first).squeeze(1), h.gather(1, first).squeeze(1)
    in_ratio = width / height  # torchvision's fallback: the central crop of the nearest allowed aspect
    if in_ratio < min(ratio):
        fw, fh = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        fw, fh = round(height * max(ratio)), height
    else:
        fw, fh = width, height
    fit = fits.any(1)
    w, h = torch.where(fit, w, fw), torch.where(fit, h, fh)
    top = torch.where(fit, torch.floor(u[:, -2] * (height - h + 1)), (height - fh) // 2)
    left = torch.where(fit, torch.floor(u[:, -1] * (width - w + 1)), (width - fw) // 2)
    return top, left, h, w


def resized_crop_boxes(n: int, height: int, width: int, generator: torch.Generator,
                       scale: tuple[float, float] = SIMCLR_CIFAR.scale, ratio: tuple[float, float] = SIMCLR_CIFAR.ratio,
                       device: torch.device | str | None = None, attempts: int = 10
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Crop boxes (top, left, h, w), integer-valued float32 (n,), as torchvision's RandomResizedCrop
    draws them: up to ``attempts`` tries of area ~ U(scale) * H * W and log-aspect ~ U(log ratio),
    w = round(sqrt(area * aspect)), h = round(sqrt(area / aspect)); the first try that fits is kept,
    else the central crop of the extreme aspect (the whole image for a square image); then top and
    left are uniform over the positions where the box fits. All tries are drawn for every image, in
    one (n, 2 * attempts + 2) draw: areas, aspects, top, left.
    """
    device = torch.device(device) if device is not None else generator.device
    return _boxes(_rand(generator, (n, 2 * attempts + 2), device), height, width, scale, ratio)


@functools.lru_cache(maxsize=8)
def _colour_basis(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Constant maps whose per-image combinations give the jitter + grayscale matrices (float64).

    Hue: R(t) = P0 + cos t P1 + sin t P2 in YIQ, so T^-1 R T = A0 + cos A1 + sin A2; saturation:
    S = s I + (1 - s) G with G = 1 w^T (gray in every channel). H S is the combination of the six
    products Ak, Ak G (k = 0, 1, 2), and the grayscale view G H S of the six G Ak, G Ak G.
    Returns (basis (12, 9), basis applied to the all-ones image (12, 3)).
    """
    T = torch.tensor(_YIQ, dtype=torch.float64)
    e = torch.eye(3, dtype=torch.float64)
    P = [e[:, :1] @ e[:1], e[:, 1:2] @ e[1:2] + e[:, 2:] @ e[2:], e[:, 2:] @ e[1:2] - e[:, 1:2] @ e[2:]]
    A = [torch.linalg.inv(T) @ p @ T for p in P]
    G = torch.ones(3, 1, dtype=torch.float64) * torch.tensor(GRAY_WEIGHTS, dtype=torch.float64)
    plain = [m for a in A for m in (a, a @ G)]
    basis = torch.stack(plain + [G @ m for m in plain])  # (12, 3, 3)
    return basis.reshape(12, 9).to(device), (basis @ torch.ones(3, dtype=torch.float64)).to(device)


def _colour(u: torch.Tensor, params: SimCLRParams) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`colour_transforms` from uniform draws u (n, 6): b, c, s, h, jitter, grayscale."""
    p = params
    u = u.double()
    jitter, gray = u[:, 4] < p.jitter_p, u[:, 5] < p.grayscale_p
    strength = torch.tensor([p.brightness, p.contrast, p.saturation, p.hue], dtype=torch.float64, device=u.device)
    f = torch.where(jitter[:, None], strength * (2 * u[:, :4] - 1), 0.0)  # (n, 4) offsets; 0 = identity
    b, c, s = 1 + f[:, 0], 1 + f[:, 1], 1 + f[:, 2]
    cos, sin = torch.cos(2 * math.pi * f[:, 3]), torch.sin(2 * math.pi * f[:, 3])
    # coefficients of A0, A0 G, A1, A1 G, A2, A2 G in H S: (A0 + cos A1 + sin A2)(s I + (1 - s) G)
    hs = torch.stack([s, 1 - s, cos * s, cos * (1 - s), sin * s, sin * (1 - s)], 1)  # (n, 6)
    coef = torch.cat([torch.where(gray[:, None], 0.0, hs), torch.where(gray[:, None], hs, 0.0)], 1)  # (n, 12)
    basis, ones = _colour_basis(u.device)
    M = ((b * c)[:, None] * (coef @ basis)).view(-1, 3, 3)
    return M.float(), ((1 - c) * b).float(), (coef @ ones).float()


def colour_transforms(n: int, generator: torch.Generator, params: SimCLRParams = SIMCLR_CIFAR,
                      device: torch.device | str | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-image colour maps of the jitter + grayscale: (M (n, 3, 3), k (n,), u (n, 3)).

    A view is ``clamp(M x + k * mean_gray(x) * u, 0, 1)`` for an RGB image x in [0, 1], with
    mean_gray(x) the mean over pixels of the luma of x. Composition of, for each image:

    - with probability ``jitter_p`` (else the identity): brightness b (x -> b x), contrast c
      (x -> c x + (1 - c) mean_gray(x)), saturation s (x -> s x + (1 - s) gray(x)) and hue h (a
      rotation of the YIQ chroma plane by 2 pi h), factors uniform as :class:`SimCLRParams` says;
    - with probability ``grayscale_p``: gray(x) in all three channels.

    Differences from torchvision's ColorJitter, which clamps to [0, 1] after each of the four
    operations and shuffles their order per image: here one clamp at the end, and so the order does
    not matter (the four maps commute when nothing is clamped between them: each keeps gray images
    gray and the luma mean in place); hue is a YIQ rotation, the linear approximation of
    torchvision's HSV hue shift. One (n, 6) draw: b, c, s, h, jitter flag, grayscale flag.
    """
    device = torch.device(device) if device is not None else generator.device
    return _colour(_rand(generator, (n, 6), device), params)


def apply_colour(images: torch.Tensor, M: torch.Tensor, k: torch.Tensor, u: torch.Tensor,
                 scale: float = 1.0) -> torch.Tensor:
    """``clamp(M (scale x) + k * mean_gray(scale x) * u, 0, 1)`` per image (:func:`colour_transforms`).

    ``images``: float (N, 3, H, W); ``scale`` = 1/255 for images in 0..255. One batched matmul.
    """
    n, ch, hgt, wid = images.shape
    flat = images.reshape(n, ch, hgt * wid)
    w = torch.tensor(GRAY_WEIGHTS, device=images.device, dtype=images.dtype)
    mean_gray = (flat.mean(2) @ w) * scale  # (N,)
    bias = (k * mean_gray)[:, None] * u  # (N, 3)
    out = torch.baddbmm(bias[:, :, None], M * scale, flat)
    return out.clamp_(0, 1).view(n, ch, hgt, wid)


def _taps(start: torch.Tensor, size: torch.Tensor, out: int, mirror: torch.Tensor | None = None
          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Bilinear taps (lo, hi, weight of hi), each (N, out), resizing [start, start + size) to ``out``
    pixels (align_corners=False, clamped to the crop: torch's bilinear resize of the cropped image)."""
    j = torch.arange(out, device=start.device, dtype=start.dtype)
    if mirror is not None:
        j = torch.where(mirror[:, None], out - 1 - j, j)
    first, last = start[:, None], (start + size - 1)[:, None]
    pos = torch.minimum(torch.maximum(first + (j + 0.5) * (size / out)[:, None] - 0.5, first), last)
    lo = pos.floor()
    return lo.long(), torch.minimum(lo + 1, last).long(), pos - lo


def resized_crop(images: torch.Tensor, top: torch.Tensor, left: torch.Tensor, h: torch.Tensor, w: torch.Tensor,
                 flip: torch.Tensor | None = None) -> torch.Tensor:
    """Crop box i = rows [top, top + h), columns [left, left + w) of float image i (N, C, H, W), resized
    bilinearly to (H, W) and mirrored left-right where ``flip``; float32 (N, C, H, W).

    Separable: the rows are interpolated (two row gathers, a lerp), then the columns (two gathers,
    a lerp); the same sample points and weights as cropping and then resizing with torch's bilinear
    interpolation (``align_corners=False``; the boxes fit the image, so a crop is only ever enlarged
    and antialiasing does not apply). Box coordinates are integer-valued float tensors (N,).
    """
    n, c, height, width = images.shape
    x = images.float()
    rlo, rhi, rw = _taps(top.float(), h.float(), height)
    clo, chi, cw = _taps(left.float(), w.float(), width, flip)
    planes = torch.arange(n * c, device=x.device).view(n, c, 1) * height
    rows = x.reshape(n * c * height, width)
    a = rows.index_select(0, (planes + rlo[:, None]).view(-1)).view(n, c, height, width)
    b = rows.index_select(0, (planes + rhi[:, None]).view(-1)).view(n, c, height, width)
    x = torch.lerp(a, b, rw.view(n, 1, height, 1))
    a = x.gather(3, clo.view(n, 1, 1, width).expand(n, c, height, width))
    b = x.gather(3, chi.view(n, 1, 1, width).expand(n, c, height, width))
    return torch.lerp(a, b, cw.view(n, 1, 1, width))


def simclr_view(images: torch.Tensor, generator: torch.Generator, params: SimCLRParams = SIMCLR_CIFAR,
                attempts: int = 10) -> torch.Tensor:
    """One SimCLR view of every image: float32 (N, 3, H, W) in [0, 1], from uint8 (0..255) or float
    ([0, 1]) images (N, 3, H, W). See :class:`SimCLRParams` for the settings and their sources.

    :func:`resized_crop` of the boxes of :func:`resized_crop_boxes` back to (H, W), mirrored with
    probability ``flip_p``; then :func:`colour_transforms` (jitter with probability ``jitter_p``,
    grayscale with ``grayscale_p``). Every draw comes from one (N, 2 * attempts + 9) uniform draw:
    crop boxes (2 * attempts + 2 columns), flip, colour (6).
    """
    n, _, height, width = images.shape
    u = _rand(generator, (n, 2 * attempts + 9), images.device)
    top, left, h, w = _boxes(u[:, :2 * attempts + 2], height, width, params.scale, params.ratio)
    flip = u[:, 2 * attempts + 2] < params.flip_p
    x = resized_crop(images, top, left, h, w, flip)
    M, k, cu = _colour(u[:, 2 * attempts + 3:], params)
    return apply_colour(x, M, k, cu, 1 / 255 if images.dtype == torch.uint8 else 1.0)


def cutout(images: torch.Tensor, generator: torch.Generator, size: int, fill: float = 0.0) -> torch.Tensor:
    """Cutout (DeVries & Taylor 2017): set a ``size`` x ``size`` square (clipped at the border) around a
    uniformly drawn centre of each image to ``fill``; apply it after normalisation for their recipe
    (fill 0 = the dataset mean). Returns a new tensor; draw order: centre rows, centre columns."""
    n, _, height, width = images.shape
    cy = _randint(generator, height, n, images.device)[:, None]
    cx = _randint(generator, width, n, images.device)[:, None]
    r = torch.arange(height, device=images.device)
    c = torch.arange(width, device=images.device)
    in_rows = (r >= cy - size // 2) & (r < cy + size - size // 2)  # (N, H)
    in_cols = (c >= cx - size // 2) & (c < cx + size - size // 2)  # (N, W)
    mask = in_rows[:, None, :, None] & in_cols[:, None, None, :]
    return images.masked_fill(mask, fill)


# ---------------------------------------------------------------------------------------------
# Normalisation
# ---------------------------------------------------------------------------------------------

def normalization_tensors(dataset: str, device: torch.device | str = "cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(mean, std) of ``dataset`` as float32 (3, 1, 1) tensors on ``device`` (nctools' normalization)."""
    mean, std = normalization(dataset)
    return (torch.tensor(mean, device=device).view(3, 1, 1), torch.tensor(std, device=device).view(3, 1, 1))


def normalize(images: torch.Tensor, mean: torch.Tensor, std: torch.Tensor, out: torch.Tensor | None = None
              ) -> torch.Tensor:
    """``(x - mean) / std`` as float32, x = uint8 images / 255 (or float images as they are).

    torchvision's arithmetic (``x.to(float32).mul_(1/255)``, ``sub_(mean)``, ``div_(std)``), so the
    result equals ``v2.ToDtype(float32, scale=True)`` + ``v2.Normalize`` bitwise. ``out``: a tensor
    (or view) of the result's shape to write into.

    >>> m, s = torch.zeros(3, 1, 1), torch.full((3, 1, 1), 0.5)
    >>> normalize(torch.full((1, 3, 1, 1), 255, dtype=torch.uint8), m, s).flatten().tolist()
    [2.0, 2.0, 2.0]
    """
    if images.dtype == torch.uint8:
        x = images.to(torch.float32).mul_(1.0 / 255).sub_(mean)
    else:
        x = torch.sub(images.to(torch.float32), mean)  # a new tensor: the input stays as it was
    return torch.div(x, std, out=out) if out is not None else x.div_(std)
