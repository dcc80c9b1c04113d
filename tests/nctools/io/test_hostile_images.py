"""Images a stranger hands over: a truncated file, a decompression bomb, an absurd --image-size. Each is one
sentence naming the file (or the option) and exit 2, never an internal error."""
from __future__ import annotations

import pytest

from nctools.errors import InputError
from nctools.io.images import MAX_IMAGE_SIZE, Preprocessing, image_dataset
from nctools.io.sources import SourceOptions

pytest.importorskip("torchvision")
Image = pytest.importorskip("PIL.Image")


class Named(InputError):
    pass


def _error(path, problem):
    return Named(f"{path}: {problem}")


def _folder(tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / cls).mkdir(parents=True)
        Image.new("RGB", (16, 16), (10, 20, 30)).save(tmp_path / cls / "0.jpg")
    return tmp_path


def test_a_truncated_or_non_image_file_is_named(tmp_path):
    root = _folder(tmp_path)
    whole = (root / "dog" / "0.jpg").read_bytes()
    (root / "dog" / "0.jpg").write_bytes(whole[: len(whole) // 3])  # cut short
    ds, classes = image_dataset(root, "train", Preprocessing(16, (0.5,) * 3, (0.5,) * 3), _error)
    assert classes == ["cat", "dog"] and ds[0][0].shape == (3, 16, 16)  # the good one still reads
    with pytest.raises(Named, match=r"dog/0.jpg: is not a readable image \(OSError: "):
        ds[1]


def test_a_decompression_bomb_is_named(tmp_path, monkeypatch):
    root = _folder(tmp_path)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)  # a 16 x 16 image is then more than twice the limit
    ds, _ = image_dataset(root, "train", Preprocessing(16, (0.5,) * 3, (0.5,) * 3), _error)
    with pytest.raises(Named, match=r"cat/0.jpg: is not a readable image \(DecompressionBombError: "):
        ds[0]


@pytest.mark.parametrize("size", [4, MAX_IMAGE_SIZE + 1, 100_000])
def test_an_image_size_out_of_range_is_refused(size):
    with pytest.raises(ValueError, match=f"image_size must be 8 to {MAX_IMAGE_SIZE} pixels, got {size}"):
        SourceOptions(image_size=size)


def test_the_cli_refuses_an_absurd_image_size_in_one_line(tmp_path):
    from tests.helpers.cli import invoke

    result = invoke("analyze", tmp_path / "w.pt", "--arch", "resnet18", "--data", tmp_path, "--image-size", "100000")
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "--image-size" in result.stderr and "100000" in result.stderr


def test_images_of_different_sizes_are_one_sentence(tmp_path):
    """A transform that does not resize leaves images of different sizes: torch.stack's error used to end the
    command as an internal error; now the sentence says what to give."""
    import torch

    from nctools.io.sources import SourceOptions, extract_features

    class Sized(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            return torch.zeros(3, 8 + 4 * i, 8 + 4 * i), i

    with pytest.raises(ValueError, match=r"different sizes after preprocessing \(3x8x8 and 3x12x12\): give an image "
                                         r"size \(--image-size N\)"):
        net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(3, 2))
        extract_features(net, Sized(), SourceOptions(batch_size=2, device="cpu", progress=False))


def test_a_crop_mode_the_builtin_pipeline_cannot_carry_out_is_refused():
    # only a make (timm's create_transform) squashes or pads; recording "squash" over a centre crop would lie
    with pytest.raises(ValueError, match="crop 'squash' needs a make that carries it out"):
        Preprocessing(16, (0.5,) * 3, (0.5,) * 3, crop="squash")
    made = Preprocessing(16, (0.5,) * 3, (0.5,) * 3, crop="squash", make=lambda p: (lambda image: image))
    assert made.record()["crop"] == "squash" and "squashed to a square" in made.describe()
