import numpy as np
import pytest
import torch

from bench.data import EpochLoader, MNIST_MD5, load_split
from bench.errors import BenchError


def test_digits_split_is_fixed_disjoint_and_scaled_from_sklearn():
    from sklearn.datasets import load_digits

    train = load_split({"dataset": "digits", "image_size": 8}, "train")
    test = load_split({"dataset": "digits", "image_size": 8}, "test")
    assert len(train) + len(test) == 1797 and len(test) == 360
    assert train.x.dtype == torch.uint8 and train.x.shape[1:] == (1, 8, 8)
    sk = load_digits()
    expected = {bytes(np.round(im * 255 / 16).astype(np.uint8).tobytes()) for im in sk.images}
    got = [bytes(im.numpy().tobytes()) for im in torch.cat([train.x, test.x])[:, 0]]
    assert set(got) <= expected
    assert train.y.unique().tolist() == list(range(10))


def test_resize_keeps_8_bit_images():
    d = load_split({"dataset": "digits", "image_size": 16}, "test")
    assert d.x.shape[1:] == (1, 16, 16) and d.x.dtype == torch.uint8 and d.spec.num_classes == 10


def test_loader_state_restores_the_exact_order():
    data = load_split({"dataset": "digits", "image_size": 8, "limit_train": 70}, "train")
    a = EpochLoader(data, 32, seed=3)
    first = [a.next()[0] for _ in range(4)]  # crosses an epoch boundary (70 = 32 + 32 + 6)
    state = a.state_dict()
    rest_a = [a.next()[0] for _ in range(3)]
    b = EpochLoader(data, 32, seed=3)
    b.load_state_dict(state)
    rest_b = [b.next()[0] for _ in range(3)]
    assert all(torch.equal(x, y) for x, y in zip(rest_a, rest_b))
    assert [len(x) for x in first] == [32, 32, 6, 32]


def test_npz_and_folder_datasets(tmp_path):
    from PIL import Image

    x = np.random.default_rng(0).integers(0, 256, (20, 12, 12), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(20) % 4)
    d = load_split({"dataset": "npz", "path": str(tmp_path / "d.npz"), "image_size": 12}, "train")
    assert torch.equal(d.x[:, 0], torch.from_numpy(x)) and d.num_classes == 4
    for i in range(6):
        folder = tmp_path / "imgs" / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(folder / f"{i}.png")
    f = load_split({"dataset": "folder", "path": str(tmp_path / "imgs"), "channels": 1, "image_size": 12}, "train")
    assert len(f) == 6 and f.num_classes == 2 and sorted(f.y.tolist()) == [0, 0, 0, 1, 1, 1]
    with pytest.raises(BenchError, match="must be uint8"):
        np.savez(tmp_path / "f.npz", x=x.astype(np.float32))
        load_split({"dataset": "npz", "path": str(tmp_path / "f.npz")}, "train")


def test_missing_and_corrupt_mnist_are_one_line_errors(tmp_path):
    with pytest.raises(BenchError, match="MNIST file .*train-images-idx3-ubyte is missing.*--data-root"):
        load_split({"dataset": "mnist"}, "train", data_root=str(tmp_path))
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for name in MNIST_MD5:
        (raw / name).write_bytes(b"garbage")
    with pytest.raises(BenchError, match="corrupt.*md5"):
        load_split({"dataset": "mnist"}, "test", data_root=str(tmp_path))


def test_mnist_from_shared_data(shared_data):
    d = load_split({"dataset": "mnist", "image_size": 32}, "test", data_root=str(shared_data))
    assert d.x.shape == (10000, 1, 32, 32) and d.x.dtype == torch.uint8
    assert torch.bincount(d.y).tolist()[0] == 980  # the official test split's class-0 count
