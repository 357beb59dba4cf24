"""The VAE's data: the digits split against scikit-learn's own, IDX files against bytes
assembled by hand, and every error a user can meet on the way in."""

import gzip
import struct

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits as sklearn_digits
from sklearn.model_selection import train_test_split

from models import images
from models.images import check_images, load_digits, load_idx_dir, read_idx, write_idx

TRAIN_N, TEST_N, HEIGHT, WIDTH = 20, 10, 4, 5


def mnist_like(data_dir, gz=False, dotted=False, seed=0):
    """Writes MNIST's four files for 20 train + 10 test uint8 images of 4x5; returns them."""
    rng = np.random.default_rng(seed)
    arrays = {
        ("train", "images"): rng.integers(0, 256, (TRAIN_N, HEIGHT, WIDTH), dtype=np.uint8),
        ("train", "labels"): rng.integers(0, 10, TRAIN_N, dtype=np.uint8),
        ("test", "images"): rng.integers(0, 256, (TEST_N, HEIGHT, WIDTH), dtype=np.uint8),
        ("test", "labels"): rng.integers(0, 10, TEST_N, dtype=np.uint8),
    }
    data_dir.mkdir(exist_ok=True)
    for key, array in arrays.items():
        name = images.MNIST_FILES[key]
        name = name.replace("-idx", ".idx") if dotted else name
        write_idx(data_dir / (name + (".gz" if gz else "")), array)
    return arrays


# ---------------------------------------------------------------- scikit-learn digits


def test_digits_split_is_scikit_learns():
    data = load_digits()
    bunch = sklearn_digits()
    x = (bunch.data >= 8).astype(np.float32)
    x_train, x_test, y_train, y_test = train_test_split(
        x, bunch.target, test_size=0.2, random_state=0, stratify=bunch.target
    )
    np.testing.assert_array_equal(data.x_train, x_train)
    np.testing.assert_array_equal(data.x_test, x_test)
    np.testing.assert_array_equal(data.y_train, y_train)
    np.testing.assert_array_equal(data.y_test, y_test)


def test_digits_shapes_values_and_balance():
    data = load_digits()
    assert data.x_train.shape == (1437, 64) and data.x_test.shape == (360, 64)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    assert data.shape == (8, 8) and data.pixels == 64
    for x in (data.x_train, data.x_test):
        assert set(np.unique(x)) == {0.0, 1.0}
    # Stratified: each digit's test count is within one of a fifth of its total.
    total = np.bincount(np.concatenate([data.y_train, data.y_test]), minlength=10)
    assert np.all(np.abs(np.bincount(data.y_test, minlength=10) - 0.2 * total) <= 1)
    assert "1437 train + 360 test" in repr(data)


def test_digits_threshold():
    low, high = load_digits(binarize_at=1), load_digits(binarize_at=16)
    assert low.x_train.mean() > load_digits().x_train.mean() > high.x_train.mean()
    with pytest.raises(ValueError, match=r"binarize_at must be in \(0, 16\]"):
        load_digits(binarize_at=0)


# ---------------------------------------------------------------- IDX files


@pytest.mark.parametrize(
    "array",
    [
        np.arange(24, dtype=np.uint8).reshape(2, 3, 4),
        np.array([-128, 0, 127], dtype=np.int8),
        np.array([[-300, 2], [3, 32000]], dtype=np.int16),
        np.array([-(2**31), 2**31 - 1], dtype=np.int32),
        np.linspace(-1, 1, 6, dtype=np.float32).reshape(3, 2),
        np.array([[np.pi, -1e300]]),
    ],
    ids=lambda a: str(a.dtype),
)
@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_round_trip(tmp_path, array, suffix):
    back = read_idx(write_idx(tmp_path / f"a{suffix}", array))
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    back[...] = 0  # native, writable: ready for torch.from_numpy


def test_write_idx_other_types(tmp_path):
    assert read_idx(write_idx(tmp_path / "b", np.array([True, False]))).dtype == np.uint8
    assert read_idx(write_idx(tmp_path / "i", np.array([5, -7], dtype=np.int64))).dtype == np.int32
    assert read_idx(write_idx(tmp_path / "f", np.array([0.5], dtype=np.float16))).dtype == float
    with pytest.raises(ValueError, match="outside int32"):
        write_idx(tmp_path / "big", np.array([2**40]))


def test_read_idx_hand_assembled_bytes(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(bytes([0, 0, 0x08, 1]) + struct.pack(">I", 3) + bytes([7, 0, 255]))
    np.testing.assert_array_equal(read_idx(path), np.array([7, 0, 255], dtype=np.uint8))
    shorts = struct.pack(">BBBBII", 0, 0, 0x0B, 2, 2, 1) + struct.pack(">2h", -2, 513)
    path.write_bytes(shorts)
    np.testing.assert_array_equal(read_idx(path), np.array([[-2], [513]], dtype=np.int16))
    doubles = struct.pack(">BBBBI", 0, 0, 0x0E, 1, 2) + struct.pack(">2d", 0.25, -3.5)
    (tmp_path / "d.gz").write_bytes(gzip.compress(doubles))
    np.testing.assert_array_equal(read_idx(tmp_path / "d.gz"), [0.25, -3.5])


def test_read_idx_errors(tmp_path):
    path = tmp_path / "x-idx3-ubyte"
    good = struct.pack(">BBBBII", 0, 0, 0x08, 2, 2, 3) + bytes(6)
    cases = [
        (b"", r"x-idx3-ubyte is empty"),
        (good[:-1], r"is truncated: shape \(2, 3\) of uint8 needs 18 bytes, found 17"),
        (good[:6], r"is truncated: expected 12 header bytes for 2 dims, found 6"),
        (good[:3], r"truncated: expected at least 4 header bytes, found 3"),
        (good + b"\x00", r"has 1 extra bytes after the data"),
        (b"\x1f\x8b" + good, r"not a readable gzip file"),
        (b"PK\x03\x04" + good, r"magic number 0x504B0304, expected 0x0000"),
        (bytes([0, 0, 0x07, 1, 0, 0, 0, 0]), r"unknown IDX type code 0x07 \(known: 0x08 uint8"),
    ]
    for content, message in cases:
        path.write_bytes(content)
        with pytest.raises(ValueError, match=message):
            read_idx(path)


# ---------------------------------------------------------------- a directory of IDX files


@pytest.mark.parametrize("gz, dotted", [(False, False), (True, False), (True, True)])
def test_load_idx_dir(tmp_path, gz, dotted):
    arrays = mnist_like(tmp_path / "mnist", gz=gz, dotted=dotted)
    data = load_idx_dir(tmp_path / "mnist")
    assert data.shape == (HEIGHT, WIDTH) and data.pixels == 20
    assert data.x_train.shape == (TRAIN_N, 20) and data.x_test.shape == (TEST_N, 20)
    for split in ("train", "test"):
        raw = arrays[split, "images"].reshape(-1, 20)
        expected = (raw / 255 >= 0.5).astype(np.float32)
        np.testing.assert_array_equal(getattr(data, f"x_{split}"), expected)
        np.testing.assert_array_equal(getattr(data, f"x_{split}"), raw >= 128)
        np.testing.assert_array_equal(getattr(data, f"y_{split}"), arrays[split, "labels"])
        assert getattr(data, f"y_{split}").dtype == np.int64
    assert check_images(data.x_train, pixels=data.pixels) is not None


def test_load_idx_dir_threshold(tmp_path):
    arrays = mnist_like(tmp_path)
    data = load_idx_dir(tmp_path, binarize_at=0.25)
    raw = arrays["train", "images"].reshape(TRAIN_N, -1)
    np.testing.assert_array_equal(data.x_train, raw >= 63.75)


def test_load_idx_dir_errors(tmp_path):
    with pytest.raises(ValueError, match=r"missing does not exist: download MNIST"):
        load_idx_dir(tmp_path / "missing")
    with pytest.raises(ValueError, match=r"is empty \(looked for train-images-idx3-ubyte"):
        load_idx_dir(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"holds no IDX files \(looked for .*t10k-labels"):
        load_idx_dir(tmp_path)


def test_load_idx_dir_pair_errors(tmp_path):
    mnist_like(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    match = r"has t10k-images-idx3-ubyte but no t10k-labels-idx1-ubyte .*add the test labels"
    with pytest.raises(ValueError, match=match):
        load_idx_dir(tmp_path)
    (tmp_path / "t10k-images-idx3-ubyte").unlink()
    with pytest.raises(ValueError, match=r"has no test files"):
        load_idx_dir(tmp_path)


def test_load_idx_dir_content_errors(tmp_path):
    mnist_like(tmp_path)
    labels = tmp_path / "train-labels-idx1-ubyte"
    write_idx(labels, np.zeros(TRAIN_N - 1, dtype=np.uint8))
    with pytest.raises(ValueError, match=r"has 20 images but .*labels-idx1-ubyte has 19 labels"):
        load_idx_dir(tmp_path)
    write_idx(labels, np.zeros((TRAIN_N, 1), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"should hold labels \(N,\), found shape \(20, 1\)"):
        load_idx_dir(tmp_path)
    write_idx(labels, np.zeros(TRAIN_N, dtype=np.uint8))
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((TRAIN_N, 20), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"should hold images \(N, H, W\), found shape \(20, 20\)"):
        load_idx_dir(tmp_path)
    write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros((TRAIN_N, 5, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"train images are \(5, 4\) .* test images are \(4, 5\)"):
        load_idx_dir(tmp_path)


# ---------------------------------------------------------------- check_images


def test_check_images_accepts():
    x = np.array([[0, 1, 1], [1, 0, 0]])
    out = check_images(x, pixels=3)
    assert out.dtype == np.float32 and out.shape == (2, 3)
    np.testing.assert_array_equal(check_images(torch.tensor(x, dtype=torch.float64)), out)
    np.testing.assert_array_equal(check_images(x.astype(bool)), out)
    cube = check_images(np.ones((4, 2, 3), dtype=np.uint8))
    assert cube.shape == (4, 6)


@pytest.mark.parametrize(
    "x, kwargs, message",
    [
        (np.array([["a", "b"]]), {}, r"images must be numeric, got dtype <U1"),
        (np.zeros(5), {}, r"must be 2-D \(N, D\) or 3-D \(N, H, W\), got shape \(5,\)"),
        (np.zeros((0, 64)), {}, r"images are empty \(shape \(0, 64\)\)"),
        (np.array([[0.0, np.nan, np.inf]]), {}, r"hold 2 NaN or infinite values"),
        (np.array([[0, 255]]), {}, r"pixels must be in \[0, 1\] .*found 0 \.\. 255.*x >= 0\.5"),
        (np.array([[-1.0, 0.5]]), {}, r"found -1 \.\. 0\.5"),
        (np.array([[0.2, 1.0, 0.7]]), {}, r"2 pixels are not 0 or 1 .*binarize them first"),
        (np.zeros((3, 784)), {"pixels": 64}, r"have 784 pixels, the model was built for 64"),
        (torch.zeros(0, 8, 8), {"what": "x_test"}, r"x_test are empty"),
    ],
)
def test_check_images_errors(x, kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_images(x, **kwargs)


def test_image_data_rejects_inconsistent_fields():
    x, y = np.zeros((3, 64), dtype=np.float32), np.zeros(3, dtype=np.int64)
    with pytest.raises(ValueError, match=r"x_train must be float32 of shape \(N, 20\)"):
        images.ImageData(x, x, y, y, (4, 5), "test")
    with pytest.raises(ValueError, match=r"y_test must be int64 of shape \(3,\)"):
        images.ImageData(x, x, y, y[:2], (8, 8), "test")
