"""Issue 12, point 4: erasing one image, as torchvision's ``RandomErasing`` does in a Dataset.

``mw.erase`` and ``nn.Erase`` take a batch by default ((B, C, H, W), or (B, H, W) grayscale);
``batched=False`` takes one image ((C, H, W) or (H, W)) and erases one rectangle across its
channels. As a Dataset transform in DataLoader workers, each worker draws its own stream."""

from __future__ import annotations

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

import maskwise as mw


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def one_rectangle(m: torch.Tensor) -> bool:
    rows, cols = m.any(1).nonzero().squeeze(1), m.any(0).nonzero().squeeze(1)
    box = m[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
    return bool(box.all()) and int(m.sum()) == box.numel()


def test_erase_one_chw_image_is_one_rectangle_across_channels() -> None:
    image = torch.rand(3, 32, 24, generator=seeded(0))
    out, m = mw.erase(image, p=1.0, value=-1.0, batched=False, generator=seeded(1))
    assert out.shape == (3, 32, 24) and m.shape == (32, 24)
    assert one_rectangle(m)
    for c in range(3):  # the same pixels in every channel
        assert torch.equal(out[c] == -1.0, m)
    # Exactly the batched call on a batch of one.
    out1, m1 = mw.erase(image[None], p=1.0, value=-1.0, generator=seeded(1))
    assert torch.equal(out, out1[0]) and torch.equal(m, m1[0])


def test_erase_one_image_values_inplace_and_grayscale() -> None:
    image = torch.zeros(3, 16, 16)
    out, m = mw.erase(image, p=1.0, value=[1.0, 2.0, 3.0], batched=False, generator=seeded(2))
    assert [out[c][m].unique().tolist() for c in range(3)] == [[1.0], [2.0], [3.0]]
    gray = torch.zeros(16, 16)
    out, m = mw.erase(gray, p=1.0, value=5.0, batched=False, generator=seeded(3))
    assert out.shape == (16, 16) and torch.equal(out == 5.0, m) and one_rectangle(m)
    same = mw.erase(image, p=1.0, value="random", inplace=True, batched=False, generator=seeded(4))
    assert same[0] is image and image[:, same[1]].abs().sum() > 0


@pytest.mark.parametrize("shape", [(2, 3, 8, 8), (8,)])
def test_erase_one_image_rejects_other_shapes(shape: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match=rf"batched=False.*{tuple(shape)}".replace("(", r"\(")
                       .replace(")", r"\)")):  # fmt: skip
        mw.erase(torch.zeros(shape), batched=False)


def test_erase_module_as_a_per_sample_transform() -> None:
    er = mw.nn.Erase(1.0, value=0.0, batched=False, seed=0)
    image = torch.ones(3, 32, 32)
    out, m = er(image)
    assert out.shape == (3, 32, 32) and m.shape == (32, 32) and one_rectangle(m)
    plain = mw.nn.Erase(1.0, value=0.0, batched=False, return_mask=False, seed=0)
    assert torch.equal(plain(image), out)  # tensor in, tensor out
    er.eval()
    out, m = er(image)
    assert out is image and m.shape == (32, 32) and not m.any()
    assert "batched=False" in repr(plain)


class Images(Dataset):
    def __init__(self, transform: torch.nn.Module) -> None:
        self.transform = transform

    def __len__(self) -> int:
        return 8

    def __getitem__(self, i: int) -> torch.Tensor:
        return self.transform(torch.ones(3, 32, 32))


@pytest.mark.parametrize("keyed", [False, True], ids=["stream", "keyed"])
def test_erase_in_dataloader_workers_draws_a_stream_per_worker(keyed: bool) -> None:
    # Worker w gets items w, w + 2, ...: with one stream copied into both workers, items 0 and 1
    # (and 2 and 3, ...) would be erased at the same place.
    er = mw.nn.Erase(1.0, batched=False, return_mask=False, keyed=keyed, seed=0)
    torch.manual_seed(0)
    loader = DataLoader(Images(er), batch_size=1, num_workers=2)
    first = torch.cat(list(loader))
    assert not torch.equal(first[0::2], first[1::2])
    torch.manual_seed(0)
    assert torch.equal(torch.cat(list(loader)), first)  # reproducible under torch.manual_seed
    torch.manual_seed(1)
    assert not torch.equal(torch.cat(list(loader)), first)  # a new epoch, new rectangles
    # The module in the main process did not move: its own stream is untouched.
    fresh = mw.nn.Erase(1.0, batched=False, keyed=keyed, seed=0)
    assert torch.equal(er(torch.ones(3, 32, 32)), fresh(torch.ones(3, 32, 32))[0])
