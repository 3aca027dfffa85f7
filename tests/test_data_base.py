"""Split / FewShotDataset containers: moving the images to a device."""

from __future__ import annotations

import torch

from fsbench.data.base import FewShotDataset, Split


def _dataset() -> FewShotDataset:
    images = torch.arange(6 * 3 * 2 * 2, dtype=torch.int64).remainder(256).to(torch.uint8).view(6, 3, 2, 2)
    split = Split("train", images, torch.tensor([1, 0, 1, 0, 2, 2]), ("a", "b", "c"))
    return FewShotDataset("toy", {"train": split}, (0.0,) * 3, (1.0,) * 3)


def test_resident_keeps_a_cpu_dataset_as_it_is():
    ds = _dataset()
    assert ds.resident("cpu") is ds and ds.split("train").to("cpu") is ds.split("train")


def test_to_moves_only_the_images():
    ds = _dataset()
    moved = ds.to("meta")  # any non-CPU device: what happens on CUDA, without a GPU
    split, before = moved.split("train"), ds.split("train")
    assert split.images.device.type == "meta" and split.images.shape == before.images.shape
    # The sampler's inputs stay on the CPU and unchanged.
    assert split.labels.device.type == "cpu" and torch.equal(split.labels, before.labels)
    assert all(torch.equal(a, b) for a, b in zip(split.class_index, before.class_index, strict=True))
    assert before.images.device.type == "cpu"  # the original is untouched
