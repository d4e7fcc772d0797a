"""tl.save / tl.load: real safetensors files, clear errors for bad files."""
from __future__ import annotations

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

import tinygrad_lite as tl
from tinygrad_lite import nn
from tinygrad_lite.serialization import load_metadata


def sample_state():
    rng = np.random.default_rng(0)
    return {
        "float32": rng.standard_normal((3, 4)).astype(np.float32),
        "float64": rng.standard_normal((5,)),
        "int64": np.arange(-3, 9, dtype=np.int64).reshape(2, 2, 3),
        "scalar": np.array(7, dtype=np.int64),
        "bool": np.array([True, False, True]),
    }


def test_round_trip_keeps_values_dtypes_and_shapes(tmp_path):
    state = sample_state()
    path = tmp_path / "weights.safetensors"
    tl.save({name: tl.Tensor(array) for name, array in state.items()}, path)
    loaded = tl.load(path)
    assert set(loaded) == set(state)
    for name, array in state.items():
        assert isinstance(loaded[name], tl.Tensor) and not loaded[name].requires_grad
        assert loaded[name].dtype == array.dtype and loaded[name].shape == array.shape, name
        np.testing.assert_array_equal(loaded[name].numpy(), array)


def test_file_is_real_safetensors_both_ways(tmp_path):
    state = sample_state()
    ours = tmp_path / "ours.safetensors"
    tl.save(state, ours)  # plain numpy arrays are accepted too
    read_back = load_file(str(ours))
    for name, array in state.items():
        np.testing.assert_array_equal(read_back[name], array)
    theirs = tmp_path / "theirs.safetensors"
    save_file(state, str(theirs))
    np.testing.assert_array_equal(tl.load(theirs)["float32"].numpy(), state["float32"])


def test_non_contiguous_tensor_is_saved_correctly(tmp_path):
    matrix = np.arange(12, dtype=np.float32).reshape(3, 4)
    tl.save({"t": matrix.T}, tmp_path / "t.safetensors")
    np.testing.assert_array_equal(tl.load(tmp_path / "t.safetensors")["t"].numpy(), matrix.T)


def test_metadata_round_trip(tmp_path):
    path = tmp_path / "m.safetensors"
    tl.save({"x": np.zeros(2, np.float32)}, path, metadata={"step": "100", "model": "gpt2"})
    assert load_metadata(path) == {"step": "100", "model": "gpt2"}
    with pytest.raises(TypeError, match="metadata"):
        tl.save({"x": np.zeros(2, np.float32)}, path, metadata={"step": 100})


def test_tied_weights_save_and_load(tmp_path):
    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(5, 3)
            self.lm_head = nn.Linear(3, 5, bias=False)
            self.lm_head.weight = self.wte.weight

    model = Tied()
    path = tmp_path / "tied.safetensors"
    tl.save(model.state_dict(), path)
    loaded = tl.load(path)
    assert set(loaded) == {"wte.weight", "lm_head.weight"}
    np.testing.assert_array_equal(loaded["lm_head.weight"].numpy(), model.wte.weight.numpy())
    np.testing.assert_array_equal(loaded["wte.weight"].numpy(), model.wte.weight.numpy())


def test_loaded_arrays_are_writable(tmp_path):
    tl.save({"w": np.ones(3, np.float32)}, tmp_path / "w.safetensors")
    w = tl.load(tmp_path / "w.safetensors")["w"]
    w.add_(1.0)  # an optimizer updates loaded weights in place
    np.testing.assert_array_equal(w.numpy(), np.full(3, 2.0, np.float32))


def test_missing_file_names_the_path(tmp_path):
    path = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        tl.load(path)


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_file_names_the_path(tmp_path, damage):
    path = tmp_path / "bad.safetensors"
    tl.save(sample_state(), path)
    data = path.read_bytes()
    path.write_bytes({"truncate": data[:-10], "garbage": b"not a safetensors file at all", "empty": b""}[damage])
    with pytest.raises(ValueError, match=r"bad\.safetensors.*not a valid safetensors file"):
        tl.load(path)


def test_save_rejects_non_tensors_and_leaves_no_temporary_file(tmp_path):
    with pytest.raises(TypeError, match="'step'"):
        tl.save({"step": 3}, tmp_path / "x.safetensors")
    with pytest.raises(OSError, match="missing_dir"):
        tl.save({"x": np.zeros(1)}, tmp_path / "missing_dir" / "x.safetensors")
    tl.save({"x": np.zeros(1)}, tmp_path / "x.safetensors")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.safetensors"]


def test_load_to_unknown_device_is_an_error(tmp_path):
    tl.save({"x": np.zeros(1)}, tmp_path / "x.safetensors")
    with pytest.raises(ValueError, match="unknown device"):
        tl.load(tmp_path / "x.safetensors", device="tpu")
