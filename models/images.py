r"""The variational autoencoder's data: binary images, nothing downloaded at run time.

Two sources give the same :class:`ImageData`:

- :func:`load_digits`: scikit-learn's bundled 8×8 digits (1797 images, pixels 0..16),
  binarized as pixel >= 8 and split 1437 / 360 by scikit-learn's ``train_test_split``
  (``test_size=0.2, random_state=0``, stratified by digit), so the split can be rebuilt
  outside vilab.
- :func:`load_idx_dir`: a directory holding MNIST's four IDX files (plain or ``.gz``),
  fetched by the user beforehand; pixels are scaled to [0, 1] and binarized.

:func:`check_images` is the gate for any images handed to the VAE: the model's
likelihood is Bernoulli, so pixels must be exactly 0 or 1. :func:`read_idx` and
:func:`write_idx` read and write the IDX format itself.

References
----------
LeCun, Y., Cortes, C. and Burges, C. J. C. *The MNIST database of handwritten digits*,
http://yann.lecun.com/exdb/mnist/ (the IDX file format is described at the bottom).
"""

import gzip
import math
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "IDX_TYPES",
    "MNIST_FILES",
    "ImageData",
    "check_images",
    "load_digits",
    "load_idx_dir",
    "read_idx",
    "write_idx",
]

IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
"""IDX type code → the big-endian numpy dtype of the data that follows the header."""

MNIST_FILES = {
    ("train", "images"): "train-images-idx3-ubyte",
    ("train", "labels"): "train-labels-idx1-ubyte",
    ("test", "images"): "t10k-images-idx3-ubyte",
    ("test", "labels"): "t10k-labels-idx1-ubyte",
}
"""MNIST's file names, without ``.gz``; Kaggle's copies write ``.idx`` for ``-idx``."""

_GZIP_MAGIC = b"\x1f\x8b"


@dataclass(frozen=True, eq=False)
class ImageData:
    """Binary images split into a training and a test set.

    x_train, x_test: float32 arrays ``(N, D)`` with ``D = H * W``, every value 0.0 or
    1.0, images flattened row by row. y_train, y_test: int64 labels ``(N,)`` (the digit
    shown). shape: ``(H, W)``, to reshape a row back into an image. source: where the
    images came from, e.g. ``"scikit-learn digits, pixel >= 8"``.
    """

    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray
    shape: tuple[int, int]
    source: str

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if x.ndim != 2 or x.shape[1] != self.pixels or x.dtype != np.float32:
                raise ValueError(
                    f"x_{split} must be float32 of shape (N, {self.pixels}) for images of "
                    f"shape {self.shape}, got {x.dtype} {x.shape}"
                )
            if y.shape != (len(x),) or y.dtype != np.int64:
                raise ValueError(
                    f"y_{split} must be int64 of shape ({len(x)},), got {y.dtype} {y.shape}"
                )

    @property
    def pixels(self) -> int:
        """D = H * W, the pixels per image (the VAE's ``x_dim``)."""
        return math.prod(self.shape)

    def __repr__(self) -> str:
        height, width = self.shape
        return (
            f"ImageData({self.source!r}: {len(self.x_train)} train + {len(self.x_test)} test "
            f"images of {height}x{width}, {self.x_train.mean():.1%} of train pixels on)"
        )


def _binarize(x: np.ndarray, at: float) -> np.ndarray:
    """``x >= at`` as float32 0.0 / 1.0."""
    return (x >= at).astype(np.float32)


def load_digits(binarize_at: float = 8) -> ImageData:
    """scikit-learn's bundled 8×8 digits, binarized and split 1437 / 360 (no download).

    Parameters
    ----------
    binarize_at : float
        A pixel (0..16) is on when it is at least this (default 8); in (0, 16].

    Returns
    -------
    ImageData
        ``shape=(8, 8)``; the split is exactly ``train_test_split(x, labels,
        test_size=0.2, random_state=0, stratify=labels)`` of the 1797 images in
        scikit-learn's order.
    """
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    if not 0 < binarize_at <= 16:
        raise ValueError(
            f"binarize_at must be in (0, 16] (digits' pixels are 0..16), got {binarize_at}"
        )
    bunch = sklearn_digits()
    x = _binarize(bunch.data, binarize_at)
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, labels, test_size=0.2, random_state=0, stratify=labels
    )
    return ImageData(
        x_train, x_test, y_train, y_test, (8, 8), f"scikit-learn digits, pixel >= {binarize_at:g}"
    )


def _file_bytes(path: Path) -> bytes:
    """The bytes of ``path``, gunzipped when they start with gzip's magic number."""
    raw = path.read_bytes()
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise ValueError(f"{path} is not a readable gzip file ({err}): download it again") from None


def _type_names() -> str:
    return ", ".join(f"0x{code:02X} {dtype.name}" for code, dtype in IDX_TYPES.items())


def read_idx(path) -> np.ndarray:
    """The array in an IDX file (MNIST's format), gzipped or not.

    Parameters
    ----------
    path : str or os.PathLike
        The file; gzip content is recognised by its first two bytes, whatever the name.

    Returns
    -------
    numpy.ndarray
        Shape as in the header, dtype the header's type in native byte order (MNIST
        images: uint8 ``(N, 28, 28)``; labels: uint8 ``(N,)``).

    Notes
    -----
    Layout, all big-endian: two zero bytes, a type code (:data:`IDX_TYPES`), the number
    of dims ``k``; ``k`` uint32 sizes; then the values in C order.
    """
    path = Path(path)
    raw = _file_bytes(path)
    if not raw:
        raise ValueError(f"{path} is empty (0 bytes): expected an IDX file")
    if len(raw) < 4:
        raise ValueError(f"{path} is truncated: expected at least 4 header bytes, found {len(raw)}")
    if raw[:2] != b"\x00\x00":
        raise ValueError(
            f"{path} has magic number 0x{raw[:4].hex().upper()}, expected 0x0000 then a type "
            "byte and a dims byte (MNIST images: 0x00000803): not an IDX file"
        )
    code, ndim = raw[2], raw[3]
    if code not in IDX_TYPES:
        raise ValueError(f"{path} has unknown IDX type code 0x{code:02X} (known: {_type_names()})")
    dtype, start = IDX_TYPES[code], 4 + 4 * ndim
    if len(raw) < start:
        raise ValueError(
            f"{path} is truncated: expected {start} header bytes for {ndim} dims, found {len(raw)}"
        )
    shape = struct.unpack_from(f">{ndim}I", raw, 4)
    count = math.prod(shape)
    expected = start + count * dtype.itemsize
    layout = f"shape {shape} of {dtype.name} needs {expected} bytes, found {len(raw)}"
    if len(raw) < expected:
        raise ValueError(f"{path} is truncated: {layout}")
    if len(raw) > expected:
        raise ValueError(f"{path} has {len(raw) - expected} extra bytes after the data: {layout}")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=start)
    return data.astype(dtype.newbyteorder("=")).reshape(shape)


def _idx_code(array: np.ndarray) -> int:
    """The IDX type code ``array`` is written with (see :func:`write_idx`)."""
    native = {dtype.newbyteorder("="): code for code, dtype in IDX_TYPES.items()}
    dtype = array.dtype.newbyteorder("=")
    if dtype in native:
        return native[dtype]
    if dtype == np.bool_:
        return 0x08
    if dtype.kind in "iu":
        info = np.iinfo(np.int32)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise ValueError(f"{dtype} values outside int32 cannot be written to an IDX file")
        return 0x0C
    if dtype.kind == "f":
        return 0x0E
    raise ValueError(f"cannot write {dtype} to an IDX file: give integers or real numbers")


def write_idx(path, array) -> Path:
    """Write ``array`` as an IDX file (gzipped when ``path`` ends with ``.gz``).

    Parameters
    ----------
    path : str or os.PathLike
    array : array_like
        uint8, int8, int16, int32, float32 and float64 keep their type; bool is written
        as uint8, other integers as int32 (when they fit), other reals as float64.

    Returns
    -------
    pathlib.Path
        ``path``, for chaining into :func:`read_idx`.
    """
    path, array = Path(path), np.asarray(array)
    code = _idx_code(array)
    header = struct.pack(f">BBBB{array.ndim}I", 0, 0, code, array.ndim, *array.shape)
    data = header + np.ascontiguousarray(array, dtype=IDX_TYPES[code]).tobytes()
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def _find(data_dir: Path, stem: str) -> Path | None:
    """The first of ``stem``, its Kaggle spelling, then both with ``.gz``, that exists."""
    names = (stem, stem.replace("-idx", ".idx"))
    for name in (*names, *(f"{name}.gz" for name in names)):
        if (data_dir / name).is_file():
            return data_dir / name
    return None


def _check_dir(data_dir: Path) -> dict:
    """MNIST's four files in ``data_dir``, after checking the directory holds them."""
    wanted = ", ".join(MNIST_FILES.values())
    if not data_dir.exists():
        raise ValueError(
            f"{data_dir} does not exist: download MNIST's IDX files ({wanted}) into it"
        )
    if not data_dir.is_dir():
        raise ValueError(f"{data_dir} is not a directory: pass the directory of the IDX files")
    found = {key: _find(data_dir, stem) for key, stem in MNIST_FILES.items()}
    if not any(found.values()):
        what = "is empty" if not any(data_dir.iterdir()) else "holds no IDX files"
        raise ValueError(
            f"{data_dir} {what} (looked for {wanted}, also with .gz or .idx for -idx): "
            "download MNIST's four files into it"
        )
    for split in ("train", "test"):
        images, labels = found[split, "images"], found[split, "labels"]
        if images is None and labels is None:
            names = f"{MNIST_FILES[split, 'images']}, {MNIST_FILES[split, 'labels']}"
            raise ValueError(f"{data_dir} has no {split} files ({names}): add them")
        for present, kind in ((images, "labels"), (labels, "images")):
            if found[split, kind] is None:
                raise ValueError(
                    f"{data_dir} has {present.name} but no {MNIST_FILES[split, kind]} "
                    f"(or .gz): add the {split} {kind} file"
                )
    return found


def _read_split(images_path: Path, labels_path: Path, binarize_at: float):
    """Binarized images ``(N, H, W)`` and int64 labels ``(N,)`` from one pair of files."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3:
        raise ValueError(f"{images_path} should hold images (N, H, W), found shape {images.shape}")
    if labels.ndim != 1:
        raise ValueError(f"{labels_path} should hold labels (N,), found shape {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(
            f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
        )
    if labels.dtype.kind not in "iu":
        raise ValueError(f"{labels_path} holds {labels.dtype} labels, expected integers")
    if images.dtype == np.uint8:
        return _binarize(images, binarize_at * 255), labels.astype(np.int64)
    in_unit_range = images.size == 0 or 0 <= images.min() <= images.max() <= 1
    if images.dtype.kind != "f" or not in_unit_range:
        raise ValueError(f"{images_path} must hold uint8 pixels or floats in [0, 1]")
    return _binarize(images, binarize_at), labels.astype(np.int64)


def load_idx_dir(data_dir, binarize_at: float = 0.5) -> ImageData:
    """MNIST-style IDX files in ``data_dir``, binarized (nothing is downloaded).

    Parameters
    ----------
    data_dir : str or os.PathLike
        Holds ``train-images-idx3-ubyte``, ``train-labels-idx1-ubyte``,
        ``t10k-images-idx3-ubyte`` and ``t10k-labels-idx1-ubyte``, each possibly
        gzipped (``.gz``) or spelled ``.idx3-ubyte`` (Kaggle's copies). When several
        spellings exist, the uncompressed one is read.
    binarize_at : float
        A pixel, scaled to [0, 1] (uint8 / 255), is on when it is at least this
        (default 0.5, i.e. uint8 >= 127.5); in (0, 1].

    Returns
    -------
    ImageData
        ``shape=(H, W)`` of the images; x flattened to ``(N, H * W)``.
    """
    if not 0 < binarize_at <= 1:
        raise ValueError(
            f"binarize_at must be in (0, 1] (pixels scaled to [0, 1]), got {binarize_at}"
        )
    data_dir = Path(data_dir)
    found = _check_dir(data_dir)
    x_train, y_train = _read_split(found["train", "images"], found["train", "labels"], binarize_at)
    x_test, y_test = _read_split(found["test", "images"], found["test", "labels"], binarize_at)
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"train images are {x_train.shape[1:]} ({found['train', 'images'].name}) but test "
            f"images are {x_test.shape[1:]} ({found['test', 'images'].name}) in {data_dir}"
        )
    shape = x_train.shape[1:]
    return ImageData(
        x_train.reshape(len(x_train), -1),
        x_test.reshape(len(x_test), -1),
        y_train,
        y_test,
        (int(shape[0]), int(shape[1])),
        f"IDX files in {data_dir}, pixel >= {binarize_at:g}",
    )


def check_images(x, pixels: int | None = None, what: str = "images") -> np.ndarray:
    """``x`` as float32 ``(N, D)`` binary images, after checking the VAE can model them.

    Parameters
    ----------
    x : numpy.ndarray or torch.Tensor or array_like
        ``(N, D)`` flat images or ``(N, H, W)`` images (flattened row by row).
    pixels : int, optional
        The D the model was built for; checked when given.
    what : str
        The name of ``x`` in error messages.

    Returns
    -------
    numpy.ndarray
        float32 ``(N, D)``, every value 0.0 or 1.0; may share memory with ``x``.

    Raises
    ------
    ValueError
        If ``x`` is not numeric, not 2-D or 3-D, empty, not finite, outside [0, 1], not
        binary (the likelihood is Bernoulli), or has other than ``pixels`` pixels.
    """
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().numpy()
    x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise ValueError(f"{what} must be numeric, got dtype {x.dtype}")
    if x.ndim not in (2, 3):
        raise ValueError(f"{what} must be 2-D (N, D) or 3-D (N, H, W), got shape {x.shape}")
    if x.size == 0:
        raise ValueError(f"{what} are empty (shape {x.shape}): give at least one image")
    x = np.asarray(x.reshape(len(x), -1), dtype=np.float32)
    if pixels is not None and x.shape[1] != pixels:
        raise ValueError(f"{what} have {x.shape[1]} pixels, the model was built for {pixels}")
    if not np.isfinite(x).all():
        bad = np.count_nonzero(~np.isfinite(x))
        raise ValueError(f"{what} hold {bad} NaN or infinite values")
    low, high = x.min(), x.max()
    if low < 0 or high > 1:
        raise ValueError(
            f"{what}: pixels must be in [0, 1] (binary images; found {low:g} .. {high:g}): "
            "binarize them first, e.g. x >= 0.5"
        )
    fractional = np.count_nonzero((x != 0) & (x != 1))
    if fractional:
        raise ValueError(
            f"{what}: {fractional} pixels are not 0 or 1 and the likelihood is Bernoulli on "
            "binary pixels: binarize them first, e.g. x >= 0.5"
        )
    return x
