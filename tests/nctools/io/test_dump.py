"""Dump I/O: exact round trips, atomic writes, and one clear DumpError for every bad file."""
from __future__ import annotations

import os
import pickle
import random
import shlex
import warnings

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

import nctools.core.validation
import nctools.io.dump_formats
from nctools.io.dump import FORMAT_VERSION, Dump, DumpError, load_dump, save_dump

FORMATS = [".safetensors", ".pt", ".npz"]
FLOAT_DTYPES = [torch.float16, torch.bfloat16, torch.float32, torch.float64]
METADATA = {
    "epoch": 12,
    "split": "test",
    "dataset": "cifar10_lt",
    "imbalance_ratio": 100,
    "method": "allnc",
    "class_names": ["airplane", "automobile", "bird"],
}


def good_tensors(dtype=torch.float32) -> dict:
    """A valid dump under its file keys: 3 classes, 6 samples, d = 4."""
    g = torch.Generator().manual_seed(0)
    return {
        "features": torch.randn(6, 4, generator=g).to(dtype),
        "labels": torch.tensor([0, 1, 2, 0, 1, 2]),
        "classifier.weight": torch.randn(3, 4, generator=g),
        "classifier.bias": torch.randn(3, generator=g),
        "class_counts": torch.tensor([500, 50, 5]),
    }


def save_good(path, dtype=torch.float32, metadata=METADATA):
    t = good_tensors(dtype)
    return save_dump(
        path, t["features"], t["labels"], t["classifier.weight"], t["classifier.bias"], t["class_counts"], metadata
    )


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("dtype", FLOAT_DTYPES, ids=str)
@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip_keeps_values_dtypes_and_metadata(tmp_path, suffix, dtype):
    path = save_good(tmp_path / f"epoch_0012{suffix}", dtype)
    dump = load_dump(path)
    t = good_tensors(dtype)
    # numpy has no bfloat16: .npz stores it as float32, which holds every bfloat16 value exactly.
    expected_dtype = torch.float32 if (suffix == ".npz" and dtype == torch.bfloat16) else dtype
    assert dump.features.dtype == expected_dtype
    assert torch.equal(dump.features, t["features"].to(expected_dtype))
    assert dump.labels.dtype == torch.int64 and torch.equal(dump.labels, t["labels"])
    assert torch.equal(dump.weight, t["classifier.weight"])
    assert torch.equal(dump.bias, t["classifier.bias"])
    assert dump.class_counts.dtype == torch.int64 and torch.equal(dump.class_counts, t["class_counts"])
    assert dump.metadata == {**METADATA, "format_version": FORMAT_VERSION}  # read back with its JSON types
    assert (dump.num_samples, dump.dim, dump.num_classes) == (6, 4, 3)
    assert (dump.epoch, dump.imbalance_ratio, dump.split, dump.dataset, dump.method) == (
        12, 100.0, "test", "cifar10_lt", "allnc",
    )
    assert dump.class_names == METADATA["class_names"]
    assert dump.format_version == "1" and dump.path == path


@pytest.mark.parametrize("suffix", FORMATS)
def test_optional_keys_absent_load_as_none(tmp_path, suffix):
    path = save_dump(tmp_path / f"d{suffix}", torch.randn(4, 2), torch.tensor([0, 1, 1, 0]))
    dump = load_dump(path)
    assert dump.weight is None and dump.bias is None and dump.class_counts is None
    assert dump.metadata == {"format_version": "1"}
    assert dump.epoch is None and dump.class_names is None and dump.num_classes == 2


@pytest.mark.parametrize("suffix", FORMATS)
def test_metadata_types_survive_the_file(tmp_path, suffix):
    """Files hold text; load_dump gives each value back with its JSON type, names stay text."""
    given = {"epoch": 3, "lr": 0.05, "augment": True, "groups": {"many": [0, 1]}, "note": "kept as text",
             "method": "2", "layer": "7"}
    dump = load_dump(save_dump(tmp_path / f"d{suffix}", torch.randn(4, 2), torch.tensor([0, 1, 1, 0]),
                               metadata=given))
    assert dump.metadata == {**given, "layer": 7, "format_version": "1"}  # text that reads as JSON is JSON
    assert dump.method == "2" and dump.epoch == 3


def test_old_text_metadata_reads_with_types(tmp_path):
    """A file written before metadata kept its types (every value text) reads the same way."""
    path = tmp_path / "old.safetensors"
    save_file(good_tensors(), str(path), metadata={"epoch": "12", "imbalance_ratio": "100.0", "split": "train",
                                                   "class_names": '["a", "b", "c"]', "format_version": "1"})
    dump = load_dump(path)
    assert dump.metadata == {"epoch": 12, "imbalance_ratio": 100.0, "split": "train", "class_names": ["a", "b", "c"],
                             "format_version": "1"}


@pytest.mark.parametrize("ratio", ["nan", "0", "-5", "0.5", "inf"])
def test_an_imbalance_ratio_below_1_or_not_finite_is_refused_naming_the_file(tmp_path, ratio):
    """track and compare put the ratio on a log axis: nan, 0, a negative or a ratio below 1 is no ratio."""
    path = tmp_path / "bad.safetensors"
    save_file(good_tensors(), str(path), metadata={"imbalance_ratio": ratio, "format_version": "1"})
    with pytest.raises(DumpError, match=r"bad.safetensors.*imbalance_ratio must be a finite number of at least 1"):
        load_dump(path)
    with pytest.raises(ValueError, match="imbalance_ratio"):
        save_dump(tmp_path / "out.safetensors", torch.zeros(3, 2), torch.tensor([0, 1, 2]),
                  metadata={"imbalance_ratio": float(ratio)})


def test_repr_is_short_and_names_shapes_classes_and_metadata(tmp_path):
    dump = load_dump(save_good(tmp_path / "epoch_0012.safetensors"))
    text = repr(dump)
    assert text.splitlines() == [
        f"Dump of {tmp_path / 'epoch_0012.safetensors'}",
        "  features      6 x 4, float32",
        "  labels        6, 3 classes: airplane, automobile, bird",
        "  classifier    3 x 4, float32, with bias",
        "  class_counts  3 training counts",
        "  metadata      class_names, dataset, epoch, format_version, imbalance_ratio, method, split",
    ]
    html = dump._repr_html_()
    assert html.startswith("<div>") and "<td style='text-align:right'>6 x 4, float32</td>" in html
    big = load_dump(save_dump(tmp_path / "big.safetensors", torch.zeros(5000, 64), torch.arange(5000) % 100,
                              metadata={"class_names": [f"class {i}" for i in range(100)]}), lazy=True)
    assert len(repr(big)) < 500 and "class 0, class 1, class 2, ..., class 99" in repr(big)
    assert "on disk" in repr(big)


def test_numpy_inputs_are_accepted_and_labels_become_int64(tmp_path):
    features = np.arange(12, dtype=np.float32).reshape(6, 2)
    path = save_dump(tmp_path / "d.safetensors", features, np.array([0, 1, 2, 0, 1, 2], dtype=np.int32))
    dump = load_dump(path)
    assert dump.labels.dtype == torch.int64
    assert np.array_equal(dump.features.numpy(), features)


def test_class_names_fix_the_class_count_when_there_is_no_classifier(tmp_path):
    # A small split may lack the last class: the names, not max(label) + 1, say C.
    path = save_dump(tmp_path / "d.pt", torch.randn(4, 3), torch.tensor([0, 1, 0, 1]),
                     metadata={"class_names": ["a", "b", "c"]})
    assert load_dump(path).num_classes == 3


def test_extra_tensors_are_ignored(tmp_path):
    tensors = {**good_tensors(), "model.fc.weight": torch.randn(3, 4), "backbone.conv1.weight": torch.randn(8, 3)}
    save_file(tensors, str(tmp_path / "d.safetensors"))
    dump = load_dump(tmp_path / "d.safetensors")
    assert torch.equal(dump.weight, tensors["classifier.weight"])


def test_a_view_of_a_bigger_buffer_is_stored_compactly(tmp_path):
    big = torch.randn(100_000, 4)
    path = save_dump(tmp_path / "d.pt", big[:6], torch.tensor([0, 1, 2, 0, 1, 2]))
    assert path.stat().st_size < 100_000  # torch.save alone would write all 1.6 MB of `big`
    assert torch.equal(load_dump(path).features, big[:6])


def test_parameters_and_requires_grad_are_stored_as_plain_data(tmp_path):
    layer = torch.nn.Linear(4, 3)
    path = save_dump(tmp_path / "d.pt", torch.randn(3, 4, requires_grad=True), torch.tensor([0, 1, 2]),
                     weight=layer.weight, bias=layer.bias)
    dump = load_dump(path)
    assert not dump.weight.requires_grad and torch.equal(dump.weight, layer.weight.detach())


# --------------------------------------------------------------------------- atomic writes


@pytest.mark.parametrize("suffix", FORMATS)
def test_save_creates_the_folder_and_leaves_only_the_dump(tmp_path, suffix):
    path = save_good(tmp_path / "run" / "dumps" / f"epoch_0001{suffix}")
    assert sorted(p.name for p in path.parent.iterdir()) == [f"epoch_0001{suffix}"]


@pytest.mark.parametrize("suffix", FORMATS)
def test_invalid_input_writes_nothing(tmp_path, suffix):
    target = tmp_path / f"bad{suffix}"
    features = torch.randn(6, 4)
    features[2, 1] = float("nan")
    with pytest.raises(DumpError, match="features must be finite") as info:
        save_dump(target, features, torch.tensor([0, 1, 2, 0, 1, 2]))
    assert str(target) in str(info.value)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("interrupt", [OSError("disk full"), KeyboardInterrupt()], ids=["error", "ctrl-c"])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch, interrupt):
    path = save_good(tmp_path / "d.pt")
    before = path.read_bytes()

    def write_half_then_fail(tmp, tensors, metadata):
        tmp.write_bytes(before[: len(before) // 2])
        raise interrupt

    fmt = nctools.io.dump_formats.FORMATS[".pt"]
    monkeypatch.setitem(nctools.io.dump_formats.FORMATS, ".pt", fmt._replace(write=write_half_then_fail))
    with pytest.raises(type(interrupt)):
        save_good(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["d.pt"]


# --------------------------------------------------------------------------- bad inputs to save_dump


@pytest.mark.parametrize(
    "kwargs, phrase",
    [
        (dict(metadata={"run": object()}), "metadata 'run' must be a str, number, list or dict"),
        (dict(metadata={"cfg": {"lr": {1, 2}}}), "metadata 'cfg' cannot be written as JSON"),
        (dict(metadata={3: "x"}), "metadata keys must be strings"),
        (dict(metadata={"class_names": ["a", "b"]}), "class_names lists 2 names but the dump has 3 classes"),
        (dict(bias=torch.zeros(3)), "bias was given without weight"),
        (dict(features="not an array"), "features must be a torch.Tensor or numpy array, got str"),
        (dict(labels=torch.tensor([0.0, 1.0, 2.0, 0.0, 1.0, 2.0])), "labels must be an integer tensor"),
    ],
    ids=["metadata-object", "metadata-unjsonable", "metadata-key", "class-names", "bias-alone", "not-array",
         "float-labels"],
)
def test_save_rejects_bad_inputs_naming_the_target(tmp_path, kwargs, phrase):
    t = good_tensors()
    args = dict(features=t["features"], labels=t["labels"], weight=t["classifier.weight"])
    if "bias" in kwargs:
        del args["weight"]
    target = tmp_path / "out.safetensors"
    with pytest.raises(DumpError) as info:
        save_dump(target, **{**args, **kwargs})
    assert phrase in str(info.value) and str(info.value).startswith(f"{target}: ")
    assert not target.exists()


def test_save_rejects_an_unknown_suffix(tmp_path):
    accepted = r"a dump ends with \.safetensors, \.pt, \.npz"
    with pytest.raises(DumpError, match=r"unsupported file type \('\.h5'\); " + accepted):
        save_good(tmp_path / "d.h5")


# --------------------------------------------------------------------------- bad files: one sentence each
# Each builder writes a bad file under tmp_path (bypassing save_dump, which refuses to) and
# returns its path; the test checks DumpError, the file name and a phrase naming the problem.


def with_keys(**changes) -> dict:
    """good_tensors() with keys replaced (``"classifier__weight"`` spells "classifier.weight"); None drops a key."""
    tensors = good_tensors()
    for key, value in changes.items():
        key = key.replace("__", ".")
        if value is None:
            tensors.pop(key)
        else:
            tensors[key] = value
    return tensors


def st(name, tensors, metadata=None):
    def build(tmp):
        save_file(tensors, str(tmp / name), metadata=metadata)
        return tmp / name
    return build


def pt(name, obj):
    def build(tmp):
        torch.save(obj, tmp / name)
        return tmp / name
    return build


def npz(name, allow_pickle=False, **arrays):
    def build(tmp):
        np.savez(tmp / name, allow_pickle=allow_pickle, **arrays)
        return tmp / name
    return build


def raw(name, data: bytes):
    def build(tmp):
        (tmp / name).write_bytes(data)
        return tmp / name
    return build


def npy_named_npz(tmp):
    with open(tmp / "a.npz", "wb") as f:
        np.save(f, np.ones(3, dtype=np.float32))
    return tmp / "a.npz"


def truncated(suffix):
    def build(tmp):
        path = save_good(tmp / f"cut{suffix}")
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
        return path
    return build


def nan_at(tensor, index, value=float("nan")):
    tensor = tensor.clone()
    tensor[index] = value
    return tensor


def good_npz_arrays(**changes):
    return {key: tensor.numpy() for key, tensor in with_keys(**changes).items()}


BAD_FILES = [
    ("missing", lambda tmp: tmp / "nope.safetensors", "no such file"),
    ("directory", lambda tmp: (tmp / "dir.pt").mkdir() or tmp / "dir.pt", "is a directory, not a dump file"),
    ("empty-safetensors", raw("e.safetensors", b""), "the file is empty (0 bytes)"),
    ("empty-pt", raw("e.pt", b""), "the file is empty (0 bytes)"),
    ("empty-npz", raw("e.npz", b""), "the file is empty (0 bytes)"),
    ("truncated-safetensors", truncated(".safetensors"), "truncated or corrupt (SafetensorError"),
    ("truncated-pt", truncated(".pt"), "truncated or corrupt (RuntimeError: PytorchStreamReader failed"),
    ("truncated-npz", truncated(".npz"), "truncated or corrupt (BadZipFile"),
    ("garbage-pt", raw("g.pt", b"hello, world" * 10), "truncated or corrupt"),
    ("garbage-safetensors-header", raw("g.safetensors", b"\xff" * 8 + b"{}"), "truncated or corrupt"),
    ("unknown-suffix", raw("d.h5", b"\x89HDF"), "unsupported file type ('.h5')"),
    ("no-suffix", raw("dump", b"x"), "unsupported file type (no suffix)"),
    ("pt-not-a-dict", pt("t.pt", torch.randn(6, 4)), "holds a Tensor, not a dict of tensors"),
    ("missing-features", st("m.safetensors", with_keys(features=None)), "missing the 'features' tensor"),
    ("missing-labels", npz("m.npz", **good_npz_arrays(labels=None)), "missing the 'labels' tensor"),
    ("features-1d", st("r.safetensors", with_keys(features=torch.randn(6))), "features must be 2-D"),
    ("labels-2d", pt("r.pt", with_keys(labels=torch.zeros(6, 1, dtype=torch.long))), "labels must be 1-D"),
    ("float-labels", st("f.safetensors", with_keys(labels=torch.zeros(6))), "labels must be an integer tensor"),
    ("int-features", pt("i.pt", with_keys(features=torch.ones(6, 4, dtype=torch.int32))),
     "features must be a floating tensor"),
    ("sample-count", st("n.safetensors", with_keys(labels=torch.tensor([0, 1, 2]))),
     "inconsistent numbers of samples: [6, 3]"),
    ("weight-wrong-dim", pt("w.pt", with_keys(classifier__weight=torch.randn(3, 5))),
     "weight has 5 columns but the features have dim 4"),
    ("bias-wrong-classes", st("b.safetensors", with_keys(classifier__bias=torch.zeros(4))),
     "bias must be 1-D with one entry per weight row (3,)"),
    ("class-counts-length", npz("c.npz", **good_npz_arrays(class_counts=torch.tensor([5, 4, 3, 2]))),
     "the number of classes is inconsistent: weight rows = 3, class_counts = 4"),
    ("nan-features", st("nan.safetensors", with_keys(features=nan_at(good_tensors()["features"], (4, 2)))),
     "features must be finite, but 1 entry is NaN or Inf (first: features[4, 2] = nan)"),
    ("inf-weight", pt("inf.pt", with_keys(classifier__weight=nan_at(good_tensors()["classifier.weight"], (1, 0),
                                                                  float("inf")))),
     "weight must be finite"),
    ("label-too-big", st("big.safetensors", with_keys(labels=torch.tensor([0, 1, 2, 0, 1, 3]))),
     "labels must lie in [0, 3)"),
    ("label-negative", npz("neg.npz", **good_npz_arrays(labels=torch.tensor([0, 1, 2, 0, -1, 2]))),
     "labels must lie in [0, 3)"),
    ("metadata-not-strings", pt("m.pt", {**good_tensors(), "metadata": {"epoch": 3}}),
     "metadata must map strings to strings, but it holds 'epoch': 3"),
    ("metadata-not-dict", pt("m.pt", {**good_tensors(), "metadata": ["epoch", "3"]}),
     "metadata must be a dict of strings, got a list"),
    ("class-names-not-json", st("cn.safetensors", good_tensors(), {"class_names": "cat,dog,eel"}),
     "metadata class_names must be a JSON list of at least 2 strings, got 'cat,dog,eel'"),
    ("class-names-wrong-length", st("cn.safetensors", good_tensors(), {"class_names": '["cat", "dog"]'}),
     "metadata class_names lists 2 names but the dump has 3 classes"),
    ("epoch-not-int", st("e.safetensors", good_tensors(), {"epoch": "last"}),
     "metadata epoch must be an integer, got 'last'"),
    ("future-format", st("v.safetensors", good_tensors(), {"format_version": "2"}), "unknown format_version '2'"),
    ("npz-object-array", npz("o.npz", allow_pickle=True,
                             **{**good_npz_arrays(), "features": np.array([{"a": 1}, None], dtype=object)}),
     "holds pickled Python objects (an object array)"),
    ("npz-is-a-pickle", raw("p.npz", pickle.dumps({"features": [1.0]})), "holds pickled Python objects"),
    ("npz-is-an-npy", npy_named_npz, "not an .npz archive: it holds a single .npy array"),
    ("npz-string-labels", npz("s.npz", **{**good_npz_arrays(), "labels": np.array(list("abcabc"))}),
     "'labels' holds an array of dtype <U1, not numbers"),
    ("npz-metadata-not-json", npz("mj.npz", **good_npz_arrays(), metadata=np.array("{epoch: 3")),
     "metadata is not valid JSON"),
    ("npz-metadata-not-0d", npz("m2.npz", **good_npz_arrays(), metadata=np.array(["a", "b"])),
     "metadata must be a 0-d string array holding JSON"),
    ("pt-labels-a-list", pt("l.pt", with_keys(labels=[0, 1, 2, 0, 1, 2])), "'labels' holds a list, not a tensor"),
    ("pt-sparse-features", pt("sp.pt", with_keys(features=torch.eye(6, 4).to_sparse())),
     "'features' is a torch.sparse_coo tensor; a dump holds dense tensors"),
]


@pytest.mark.parametrize("build, phrase", [case[1:] for case in BAD_FILES], ids=[case[0] for case in BAD_FILES])
def test_bad_file_raises_one_sentence_naming_the_file_and_problem(tmp_path, build, phrase):
    path = build(tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about the pickle protocol of raw pickles
        with pytest.raises(DumpError) as info:
            load_dump(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and message.endswith(".") and "\n" not in message
    assert phrase in message, message


def test_dump_error_is_a_value_error():
    assert issubclass(DumpError, ValueError)


# --------------------------------------------------------------------------- files that try to run code


class RunsCode:
    """Unpickling this calls os.system, which touches the marker file: proof that code ran."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.marker))}",)


def test_the_payload_would_run_if_unpickled_unsafely(tmp_path):
    # Guards the tests below: if the payload were inert, a missing marker would prove nothing.
    marker = tmp_path / "ran"
    func, args = RunsCode(marker).__reduce__()
    func(*args)
    assert marker.exists()


@pytest.mark.parametrize("container", ["torch-zip", "raw-pickle"])
def test_a_pt_pickle_that_runs_code_is_refused_and_does_not_run(tmp_path, container):
    marker = tmp_path / "pwned"
    payload = {"features": RunsCode(marker), "labels": torch.arange(3)}
    path = tmp_path / "evil.pt"
    if container == "torch-zip":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    with pytest.raises(DumpError) as info:
        load_dump(path)
    assert not marker.exists()
    message = str(info.value)
    assert message.startswith(f"{path}: could not be loaded safely: it is not a plain tensor dict")
    assert "system" in message  # the refused global is named


def test_an_npz_object_array_that_runs_code_is_refused_and_does_not_run(tmp_path):
    marker = tmp_path / "pwned"
    arrays = {**good_npz_arrays(), "labels": np.array([RunsCode(marker)], dtype=object)}
    np.savez(tmp_path / "evil.npz", allow_pickle=True, **arrays)
    with pytest.raises(DumpError, match="holds pickled Python objects"):
        load_dump(tmp_path / "evil.npz")
    assert not marker.exists()


# --------------------------------------------------------------------------- validate=False


def test_validate_false_skips_the_finiteness_scan_only(tmp_path, monkeypatch):
    features = nan_at(good_tensors()["features"], (0, 0))
    save_file(with_keys(features=features), str(tmp_path / "nan.safetensors"))
    with pytest.raises(DumpError, match="features must be finite"):
        load_dump(tmp_path / "nan.safetensors")

    def scan_must_not_run(*args, **kwargs):
        raise AssertionError("validate=False ran the O(N*d) finiteness scan")

    monkeypatch.setattr(nctools.core.validation, "check_finite", scan_must_not_run)
    dump = load_dump(tmp_path / "nan.safetensors", validate=False)
    assert torch.isnan(dump.features[0, 0])
    # The structural checks stay on.
    save_file(with_keys(labels=torch.tensor([0, 1, 2, 0, 1, 7])), str(tmp_path / "range.safetensors"))
    with pytest.raises(DumpError, match=r"labels must lie in \[0, 3\)"):
        load_dump(tmp_path / "range.safetensors", validate=False)


# --------------------------------------------------------------------------- damaged bytes


@pytest.mark.parametrize("suffix", FORMATS)
def test_damaged_files_load_or_raise_dump_error_never_anything_else(tmp_path, suffix):
    # The decoders' error types are undocumented; a seeded fuzz keeps the translation honest.
    original = save_good(tmp_path / f"good{suffix}").read_bytes()
    rng = random.Random(suffix)
    path = tmp_path / f"damaged{suffix}"
    for _ in range(150):
        data = bytearray(original)
        if rng.random() < 0.5:
            data = data[: rng.randrange(1, len(data))]
        else:
            for _ in range(rng.choice([1, 20])):
                data[rng.randrange(len(data))] = rng.randrange(256)
        path.write_bytes(bytes(data))
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                assert isinstance(load_dump(path), Dump)
        except DumpError as err:
            assert str(err).startswith(f"{path}: ") and "\n" not in str(err)
