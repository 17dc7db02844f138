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


def _rows(t: torch.Tensor) -> set[bytes]:
    return {bytes(r.flatten().tolist()) for r in t}


def test_npz_and_folder_datasets(tmp_path):
    from PIL import Image

    x = np.random.default_rng(0).integers(0, 256, (20, 12, 12), dtype=np.uint8)
    np.savez(tmp_path / "split.npz", x_train=x[:15], y_train=np.arange(15) % 4, x_test=x[15:], y_test=np.arange(5) % 4)
    cfg = {"dataset": "npz", "path": str(tmp_path / "split.npz"), "image_size": 12}
    d = load_split(cfg, "train")
    assert torch.equal(d.x[:, 0], torch.from_numpy(x[:15])) and d.num_classes == 4
    assert torch.equal(load_split(cfg, "test").x[:, 0], torch.from_numpy(x[15:]))
    assert "held-out" not in d.name  # explicit splits are used as given
    for i in range(6):
        folder = tmp_path / "imgs" / "train" / f"class{i % 2}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i]).save(folder / f"{i}.png")
    (tmp_path / "imgs" / "test" / "class0").mkdir(parents=True)
    Image.fromarray(x[6]).save(tmp_path / "imgs" / "test" / "class0" / "6.png")
    f = load_split({"dataset": "folder", "path": str(tmp_path / "imgs"), "channels": 1, "image_size": 12}, "train")
    assert len(f) == 6 and f.num_classes == 2 and sorted(f.y.tolist()) == [0, 0, 0, 1, 1, 1]
    with pytest.raises(BenchError, match="must be uint8"):
        np.savez(tmp_path / "f.npz", x=x.astype(np.float32))
        load_split({"dataset": "npz", "path": str(tmp_path / "f.npz")}, "train")


def test_data_without_splits_gets_a_seeded_held_out_test_split(tmp_path):
    """A single `x` (or a folder without train/ and test/) must not be evaluated on its training images."""
    from PIL import Image

    x = np.random.default_rng(1).integers(0, 256, (40, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(40) % 5)
    cfg = {"dataset": "npz", "path": str(tmp_path / "d.npz"), "image_size": 8}
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    assert (len(train), len(test)) == (36, 4)  # the default 10 % held out
    assert not _rows(train.x) & _rows(test.x)
    assert _rows(train.x) | _rows(test.x) == _rows(torch.from_numpy(x).unsqueeze(1))
    assert "held-out split: 10% of d.npz" in test.name and "seed 0" in test.name
    assert torch.equal(load_split(cfg, "test").x, test.x)  # seeded: the same split every run
    other = load_split({**cfg, "split_seed": 1, "eval_fraction": 0.25}, "test")
    assert len(other) == 10 and not torch.equal(other.x[:4], test.x)
    for i in range(10):
        Image.fromarray(x[i]).save(tmp_path / f"{i}.png")
    (tmp_path / "imgs").mkdir()
    for i in range(10):
        (tmp_path / f"{i}.png").rename(tmp_path / "imgs" / f"{i}.png")
    fcfg = {"dataset": "folder", "path": str(tmp_path / "imgs"), "channels": 1, "image_size": 8}
    ftrain, ftest = load_split(fcfg, "train"), load_split(fcfg, "test")
    assert (len(ftrain), len(ftest)) == (9, 1) and not _rows(ftrain.x) & _rows(ftest.x)
    assert "held-out split" in ftest.name
    with pytest.raises(BenchError, match="eval_fraction"):
        load_split({**cfg, "eval_fraction": 1.5}, "train")


def _save_folder(root, images, labels=None):
    from PIL import Image

    for i, im in enumerate(images):
        folder = root / (f"class{labels[i]}" if labels is not None else "")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(im).save(folder / f"{i}.png")


NPZ_LAYOUTS = {  # every layout without both explicit splits: (arrays, where the held-out split is drawn from)
    "x only": (lambda x: {"x": x, "y": np.arange(len(x)) % 3}, "'x'"),
    "x_train only": (lambda x: {"x_train": x, "y_train": np.arange(len(x)) % 3}, "'x_train'"),
}


@pytest.mark.parametrize("layout", list(NPZ_LAYOUTS))
def test_every_npz_layout_without_a_test_split_evaluates_on_held_out_images(tmp_path, layout):
    make, source = NPZ_LAYOUTS[layout]
    x = np.random.default_rng(2).integers(0, 256, (50, 8, 8), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", **make(x))
    cfg = {"dataset": "npz", "path": str(tmp_path / "d.npz"), "image_size": 8}
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    assert len(test) == 5 and len(train) == 45
    assert not _rows(train.x) & _rows(test.x)  # train ∩ test = ∅
    assert "held-out split" in test.name and source in test.name and "held-out split" in train.name


@pytest.mark.parametrize("layout", ["no split folders", "train/ only", "train/ only, with classes"])
def test_every_folder_layout_without_a_test_split_evaluates_on_held_out_images(tmp_path, layout):
    x = np.random.default_rng(3).integers(0, 256, (30, 8, 8), dtype=np.uint8)
    root = tmp_path / "imgs"
    sub = root if layout == "no split folders" else root / "train"
    _save_folder(sub, x, labels=np.arange(30) % 2 if "classes" in layout else None)
    cfg = {"dataset": "folder", "path": str(root), "channels": 1, "image_size": 8}
    train, test = load_split(cfg, "train"), load_split(cfg, "test")
    assert (len(train), len(test)) == (27, 3)
    assert not _rows(train.x) & _rows(test.x)  # train ∩ test = ∅
    assert _rows(train.x) | _rows(test.x) == _rows(torch.from_numpy(x).unsqueeze(1))
    assert "held-out split" in test.name


@pytest.mark.parametrize("arrays, found", [
    ({"x": 1, "x_train": 1}, "found train, x"),  # x beside x_train: all images, or the training ones?
    ({"x": 1, "x_test": 1}, "found test, x"),
    ({"x_test": 1}, "found test;"),
    ({"x": 1, "x_train": 1, "x_test": 1}, "found test, train, x"),
])
def test_ambiguous_npz_splits_name_the_keys_found(tmp_path, arrays, found):
    x = np.zeros((6, 8, 8), np.uint8)
    np.savez(tmp_path / "a.npz", **{k: x for k in arrays})
    with pytest.raises(BenchError, match=f"ambiguous splits, {found}"):
        load_split({"dataset": "npz", "path": str(tmp_path / "a.npz"), "image_size": 8}, "test")


def test_a_folder_with_test_but_no_train_is_ambiguous(tmp_path):
    _save_folder(tmp_path / "imgs" / "test", np.zeros((3, 8, 8), np.uint8))
    with pytest.raises(BenchError, match="ambiguous splits, found test;"):
        load_split({"dataset": "folder", "path": str(tmp_path / "imgs"), "channels": 1, "image_size": 8}, "train")


def test_npz_shape_and_garbage_files_get_plain_messages(tmp_path):
    np.savez(tmp_path / "two.npz", x=np.zeros((4, 16, 16, 2), np.uint8))
    with pytest.raises(BenchError, match=r"shape \[4, 16, 16, 2\]: 4-D images need 1 or 3 channels"):
        load_split({"dataset": "npz", "path": str(tmp_path / "two.npz"), "image_size": 16}, "train")
    (tmp_path / "junk.npz").write_bytes(b"\x80\x04not an archive at all")
    with pytest.raises(BenchError, match="is not a NumPy .npz archive") as e:
        load_split({"dataset": "npz", "path": str(tmp_path / "junk.npz"), "image_size": 16}, "train")
    assert "allow_pickle" not in str(e.value)


@pytest.mark.parametrize("arrays, match", [
    ({"x": np.zeros((4, 8), np.uint8)}, "at least one image as"),
    ({"x": np.zeros((0, 8, 8), np.uint8)}, "at least one image as"),
    ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros((0,), np.int64)}, "one non-negative integer label per image"),
    ({"x": np.zeros((4, 8, 8), np.uint8), "y": np.zeros((4,), np.float32)}, "one non-negative integer label per image"),
])
def test_malformed_npz_is_a_one_line_error(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(BenchError, match=match):
        load_split({"dataset": "npz", "path": str(tmp_path / "bad.npz"), "image_size": 8}, "train")


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


def _cifar10_jpeg_tarball(root, per_class=(3, 2)):
    """A tiny cifar10-jpeg.tar.gz: flat 32x32 images whose colour encodes (class, rank), as JPEG."""
    import tarfile

    from PIL import Image

    from bench.data import CIFAR10_CLASSES

    src = root / "build" / "cifar10-jpeg"
    for split, n in zip(("train", "test"), per_class):
        for k, name in enumerate(CIFAR10_CLASSES):
            (src / split / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (32, 32), (20 * k, 60 * i, 200)).save(src / split / name / f"{i:04d}.jpg", quality=95)
    with tarfile.open(root / "cifar10-jpeg.tar.gz", "w:gz") as tar:
        tar.add(src, arcname="cifar10-jpeg")


def test_cifar10_falls_back_to_the_jpeg_tarball_extracted_once_into_the_cache(tmp_path, monkeypatch):
    root, cache = tmp_path / "data", tmp_path / "cache"
    root.mkdir()
    _cifar10_jpeg_tarball(root)
    monkeypatch.setenv("GENBENCH_CACHE", str(cache))
    d = load_split({"dataset": "cifar10"}, "test", data_root=str(root))
    assert d.x.shape == (20, 3, 32, 32) and d.x.dtype == torch.uint8 and d.num_classes == 10
    # class order is CIFAR-10's (airplane = 0 .. truck = 9), interleaved by rank so any prefix is balanced
    assert d.y.tolist() == list(range(10)) * 2
    k, i = d.y, torch.arange(20) // 10
    expected = torch.stack([20 * k, 60 * i, torch.full_like(k, 200)], 1).view(20, 3, 1, 1).float()
    assert float((d.x.float() - expected).abs().max()) <= 3  # flat colours survive JPEG almost exactly
    assert "lossy JPEG" in d.name and "not comparable with published" in d.source
    extracted = list((cache / "data").iterdir())
    assert len(extracted) == 1 and extracted[0].name.startswith("cifar10-jpeg-")
    assert sorted(p.name for p in extracted[0].iterdir()) == ["test", "train"]
    # the next load reuses the extraction (not the tarball): an image changed in the cache is what loads
    from PIL import Image

    Image.new("RGB", (32, 32), (0, 0, 0)).save(extracted[0] / "train" / "airplane" / "0000.jpg")
    train = load_split({"dataset": "cifar10", "limit_train": 10}, "train", data_root=str(root), cache_dir=cache)
    assert len(train) == 10 and train.y.tolist() == list(range(10))
    assert int(train.x[0].max()) <= 3 and int(train.x[1].max()) >= 190
    assert list((cache / "data").iterdir()) == extracted
    # an already extracted cifar10-jpeg/ folder under the data root is used as it is
    (root / "cifar10-jpeg.tar.gz").unlink()
    (root / "build" / "cifar10-jpeg").rename(root / "cifar10-jpeg")
    d2 = load_split({"dataset": "cifar10"}, "test", data_root=str(root), cache_dir=tmp_path / "unused")
    assert torch.equal(d2.x, d.x) and not (tmp_path / "unused").exists()


def test_cifar10_missing_everywhere_or_misfiled_is_a_one_line_error(tmp_path):
    with pytest.raises(BenchError, match=r"cifar-10-batches-py or the JPEG copy .*cifar10-jpeg\.tar\.gz") as e:
        load_split({"dataset": "cifar10"}, "test", data_root=str(tmp_path), cache_dir=tmp_path / "cache")
    assert "\n" not in str(e.value)
    (tmp_path / "cifar10-jpeg" / "test" / "plane").mkdir(parents=True)
    with pytest.raises(BenchError, match="one folder per CIFAR-10 class"):
        load_split({"dataset": "cifar10"}, "test", data_root=str(tmp_path), cache_dir=tmp_path / "cache")


def test_shared_cifar10_jpeg_tarball_holds_every_cifar10_image():
    import tarfile
    from collections import Counter

    from bench.data import CIFAR10_CLASSES
    from tests.conftest import SHARED_DATA

    tar_path = SHARED_DATA / "cifar10-jpeg.tar.gz"
    if not tar_path.is_file():
        pytest.skip("../shared/data/cifar10-jpeg.tar.gz not present (only on the project's machines)")
    with tarfile.open(tar_path) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    counts = Counter(tuple(n.split("/")[1:3]) for n in names if n.endswith(".jpg"))
    assert sorted({c for _, c in counts}) == sorted(CIFAR10_CLASSES)
    assert all(counts[("train", c)] == 5000 and counts[("test", c)] == 1000 for c in CIFAR10_CLASSES)
