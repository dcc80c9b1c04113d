"""Reading a state dict as frameworks save it (``nctools.io.state_dicts``) and the preprocessing of
``SourceOptions``: the same features whatever the wrapping, and --mean / --std exactly as by hand."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import nctools
from nctools.io.sources import SourceError, SourceOptions, load_source
from nctools.io.state_dicts import choose, readings
from tests.helpers.cli import image_folder

MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def _error(problem):
    return ValueError(problem)


def _state(*keys):
    return {k: torch.zeros(1) for k in keys}


def test_readings_list_nested_dicts_and_wrapper_prefixes():
    contents = {"state_dict": _state("model._orig_mod.a.weight", "model._orig_mod.b.bias", "loss.weight"),
                "epoch": 3, "hyper_parameters": {"lr": 0.1}}
    found = readings(contents, _error)
    assert [(r.where, r.prefix) for r in found] == [("'state_dict'", ""), ("'state_dict'", "model."),
                                                    ("'state_dict'", "model._orig_mod.")]
    assert set(found[2].state) == {"a.weight", "b.bias"}  # keys without the prefix are left out
    picked = choose(found, {"a.weight", "b.bias"}, "toy", _error)
    assert picked.how == "'state_dict' entry minus prefix 'model._orig_mod.'"
    assert [r.prefix for r in readings(contents, _error, strip_prefix="model")] == ["model."]
    with pytest.raises(ValueError, match="no key starts with the prefix 'net.'"):
        readings(contents, _error, strip_prefix="net.")
    with pytest.raises(ValueError, match="holds no tensors"):
        readings({"epoch": 3}, _error)
    with pytest.raises(ValueError, match=r"--state-key 'ema' names no dict of tensors in it; its dicts of tensors "
                                         r"are 'state_dict'"):
        readings(contents, _error, state_key="ema")


def test_choose_names_the_closest_reading():
    found = readings({"module.a": torch.zeros(1), "module.b": torch.zeros(1), "module.x": torch.zeros(1)}, _error)
    with pytest.raises(ValueError) as err:
        choose(found, {"a", "b", "c"}, "toy", _error)
    assert str(err.value) == ("the weights do not fit the architecture toy: the closest reading (minus prefix "
                              "'module.') lacks 1 of its 3 keys (c) and has 1 keys it does not know (x); pass "
                              "--state-key KEY or --strip-prefix P if the weights are elsewhere in the file")


def test_source_options_check_mean_std_and_transform():
    assert SourceOptions(mean=[0.5, 0.5, 0.5]).mean == (0.5, 0.5, 0.5)
    with pytest.raises(ValueError, match="mean must be three finite numbers"):
        SourceOptions(mean=(1.0, 2.0))
    with pytest.raises(ValueError, match="all > 0"):
        SourceOptions(std=(0.2, 0.0, 0.2))
    with pytest.raises(ValueError, match="transform replaces image_size, mean and std"):
        SourceOptions(transform="m:f", mean=MEAN)


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    torchvision = pytest.importorskip("torchvision")
    root = tmp_path_factory.mktemp("resnet")
    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=3).eval()
    torch.save(model.state_dict(), root / "plain.pt")
    return model, root, image_folder(root / "images", per_class=2)


def _options(data, **kw):
    return SourceOptions(arch="resnet18", data=data, device="cpu", **kw)


@pytest.mark.parametrize("wrap", [
    lambda s: {"state_dict": {"model." + k: v for k, v in s.items()}},
    lambda s: {"_orig_mod." + k: v for k, v in s.items()},
    lambda s: {"module." + k: v for k, v in s.items()},
], ids=["lightning", "compiled", "ddp"])
def test_wrapped_state_dicts_give_the_same_features(resnet, tmp_path, wrap, one_torch_thread):
    model, root, data = resnet
    torch.save(wrap(model.state_dict()), tmp_path / "wrapped.ckpt")
    options = _options(data, image_size=32, mean=MEAN, std=STD)
    plain, wrapped = load_source(root / "plain.pt", options), load_source(tmp_path / "wrapped.ckpt", options)
    assert torch.equal(plain.features, wrapped.features) and torch.equal(plain.weight, wrapped.weight)
    assert "weights" not in plain.metadata and wrapped.metadata["weights"]


def test_mean_and_std_normalise_exactly_as_by_hand(resnet, one_torch_thread):
    """The features of --image-size 32 --mean --std are those of a loader normalising by hand."""
    from torch.utils.data import DataLoader
    from torchvision.datasets import ImageFolder

    model, root, data = resnet
    mean, std = torch.tensor(MEAN).view(3, 1, 1), torch.tensor(STD).view(3, 1, 1)

    def by_hand(image):
        x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.uint8).copy()).permute(2, 0, 1)
        return (x.float() / 255 - mean) / std

    want = nctools.extract(model, DataLoader(ImageFolder(str(data), transform=by_hand), batch_size=128), device="cpu")
    got = load_source(root / "plain.pt", _options(data, image_size=32, mean=MEAN, std=STD))
    torch.testing.assert_close(got.features, want.features, rtol=1e-5, atol=1e-5)
    assert torch.equal(got.labels, want.labels)
    with pytest.warns(UserWarning, match=r"mean 0.485,0.456,0.406, std 0.229,0.224,0.225, assumed"):
        default = load_source(root / "plain.pt", _options(data, image_size=32))  # ImageNet statistics
    assert not torch.allclose(default.features, want.features, rtol=1e-3, atol=1e-3)


def test_a_registered_architecture_takes_wrapped_weights(tmp_path, one_torch_thread):
    """allnc_train's resnet32 (a plug-in) with DDP's prefix: each reading is tried, exactly one loads."""
    from allnc_train.models import NCModel, ResNetCifar

    torch.manual_seed(0)
    state = NCModel(ResNetCifar(5, 1), 3).state_dict()
    torch.save(state, tmp_path / "plain.pt")
    torch.save({"module." + k: v for k, v in state.items()}, tmp_path / "ddp.pt")
    data = image_folder(tmp_path / "images", per_class=2)
    options = SourceOptions(arch="resnet32", data=data, device="cpu")
    plain, ddp = load_source(tmp_path / "plain.pt", options), load_source(tmp_path / "ddp.pt", options)
    assert torch.equal(plain.features, ddp.features)
    torch.save({"teacher." + k: v for k, v in state.items()}, tmp_path / "teacher.pt")
    with pytest.raises(SourceError, match="has no 'classifier.weight' tensor"):
        load_source(tmp_path / "teacher.pt", options)
