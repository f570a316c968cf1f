"""Images: MNIST-format IDX files, and scikit-learn's bundled 8x8 digits."""

from __future__ import annotations

import gzip
import math
import struct
from pathlib import Path

import torch

from maskwise.experiments.data.files import Split

__all__ = ["load_digits", "load_idx", "load_idx_dir"]

_IDX_DTYPES = {
    0x08: torch.uint8,
    0x09: torch.int8,
    0x0B: torch.int16,
    0x0C: torch.int32,
    0x0D: torch.float32,
}


def load_idx(path: str | Path) -> torch.Tensor:
    """Read one IDX file (MNIST format, optionally gzipped) into a tensor of its shape."""
    path = Path(path)
    try:
        data = gzip.open(path).read() if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as e:
        raise ValueError(f"{path}: unreadable ({e}).") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise ValueError(f"{path}: not an IDX file (bad magic number).")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise ValueError(f"{path}: header truncated ({len(data)} bytes for {ndim} dimensions).")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = _IDX_DTYPES[data[2]]
    body = data[4 + 4 * ndim :]
    count = math.prod(dims)
    itemsize = torch.empty((), dtype=dtype).element_size()
    if len(body) != count * itemsize:
        raise ValueError(
            f"{path}: {len(body)} data bytes for shape {dims} (expected {count * itemsize})."
        )
    t = torch.frombuffer(bytearray(body), dtype=dtype)
    if itemsize > 1:  # IDX is big-endian
        t = t.view(torch.uint8).view(-1, itemsize).flip(-1).reshape(-1).view(dtype)
    return t.reshape(dims).clone()


def load_idx_dir(root: str | Path) -> dict[str, Split]:
    """``{"train", "test"}`` splits of an MNIST-format directory: images (N, 1, H, W) float in
    [0, 1], labels (N,) int64.

    Files: ``train-images-idx3-ubyte[.gz]`` / ``train-labels-idx1-ubyte[.gz]`` and the same with
    ``t10k`` or ``test`` for the test split.
    """
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a directory.")
    files = [p for p in root.iterdir() if "idx" in p.name]
    splits: dict[str, Split] = {}
    for split, prefixes in (("train", ("train",)), ("test", ("t10k", "test"))):
        imgs = [p for p in files if p.name.startswith(prefixes) and "images" in p.name]
        labs = [p for p in files if p.name.startswith(prefixes) and "labels" in p.name]
        if len(imgs) != 1 or len(labs) != 1:
            raise ValueError(
                f"{root}: expected one {split} images file and one labels file "
                f"({'/'.join(prefixes)}-images-idx3-ubyte[.gz], ...-labels-idx1-ubyte[.gz]); "
                f"found {len(imgs)} and {len(labs)}."
            )
        x, y = load_idx(imgs[0]), load_idx(labs[0])
        if x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(
                f"{root}: {split} images {tuple(x.shape)} and labels {tuple(y.shape)} do not match."
            )
        splits[split] = Split(x.unsqueeze(1).float() / 255.0, y.long())
    return splits


def load_digits() -> dict[str, Split]:
    """scikit-learn's bundled 8x8 digits as one ``"all"`` split: images (N, 1, 8, 8) in [0, 1]."""
    try:
        from sklearn.datasets import load_digits as sk_load
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the digits data set needs scikit-learn: pip install 'maskwise[experiments]'"
        ) from e
    d = sk_load()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0
    return {"all": Split(x, torch.tensor(d.target, dtype=torch.long))}
