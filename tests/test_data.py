"""The data layer: dataset registry and builders (mnist5k, CIFAR on pickle
fixtures, imagefolder, synthetic), validation carving, superclass maps and the
device-resident TensorLoader with batched augmentation."""
from __future__ import annotations

import json
import pickle
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import ktgfast.data as kd
from ktgfast.data import (
    Augment,
    Split,
    TensorLoader,
    carve_validation,
    get_dataset,
    list_datasets,
    load_mnist5k,
    load_superclass_map,
    register_dataset,
)
from ktgfast.data.augment import AugParams, augment_batch
from ktgfast.data.cifar import CIFAR_SPECS
from ktgfast.data.integrity import IntegrityError, md5sum
from ktgfast.data.split import stratified_counts
from ktgfast.data.superclass import DIGIT_SUPERCLASSES

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


# ---------------------------------------------------------------------------
# helpers

def make_split(n: int, num_classes: int = 5, size: int = 8, channels: int = 3, seed: int = 0,
               ids: bool = True) -> Split:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, channels, size, size), generator=g, dtype=torch.uint8)
    labels = torch.arange(n) % num_classes
    return Split(images, labels, ids=torch.arange(100, 100 + n) if ids else None)


def coded_split(n: int, size: int = 12, num_classes: int = 7) -> Split:
    """Constant images that spell their own index (channels 0, 1) and label
    (channel 2): any crop/flip with reflect padding keeps them readable."""
    idx = torch.arange(n)
    labels = (idx * 5 + 3) % num_classes
    code = torch.stack([idx % 256, idx // 256, labels], 1).to(torch.uint8)
    images = code[:, :, None, None].expand(n, 3, size, size).contiguous()
    return Split(images, labels)


MEAN, STD = (0.4, 0.5, 0.6), (0.2, 0.25, 0.3)


def denormalize(x: torch.Tensor, mean=MEAN, std=STD) -> torch.Tensor:
    m = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    u = (x.double().cpu() * s + m) * 255
    assert (u - u.round()).abs().max() < 1e-3
    return u.round().to(torch.int64)


def epoch_batches(loader: TensorLoader, epoch: int | None = None):
    if epoch is not None:
        loader.set_epoch(epoch)
    return [tuple(t.cpu() for t in b) for b in loader]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for u, v in zip(a, b):
        for s, t in zip(u, v):
            assert torch.equal(s, t)


# ---------------------------------------------------------------------------
# CIFAR fixtures in the release's exact pickle layout

def _pickle(path: Path, obj) -> None:
    path.write_bytes(pickle.dumps(obj, protocol=2))


def write_cifar(root: Path, key: str, per_file: int = 20, seed: int = 0) -> dict:
    """Write a tiny CIFAR release under ``root``; return ``{"md5", "train", "test"}``
    (the md5 table of the written files and the raw arrays)."""
    spec = CIFAR_SPECS[key]
    base = root / spec.folder
    base.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    num_classes = 100 if spec.coarse else 10
    coarse_of = np.arange(num_classes) % 20
    raw = {"train": [], "test": []}
    for part, names in (("train", spec.train), ("test", spec.test)):
        for name in names:
            n = num_classes if (spec.coarse and part == "train") else per_file
            data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
            labels = (np.arange(n) + rng.integers(num_classes)) % num_classes
            entry = {"batch_label": f"fixture {name}", "data": data,
                     "filenames": [f"img_{i}.png" for i in range(n)]}
            if spec.coarse:
                entry.update(fine_labels=labels.tolist(), coarse_labels=coarse_of[labels].tolist())
            else:
                entry.update(labels=labels.tolist())
            _pickle(base / name, entry)
            raw[part].append((data, labels))
    if spec.coarse:
        meta = {"fine_label_names": [f"fine{i:02d}" for i in range(100)],
                "coarse_label_names": [f"coarse{i:02d}" for i in range(20)]}
    else:
        meta = {"num_cases_per_batch": per_file, "label_names": [f"c{i}" for i in range(10)],
                "num_vis": 3072}
    _pickle(base / spec.meta, meta)
    return {"md5": {f: md5sum(base / f) for f in spec.files}, **raw}


@pytest.fixture
def cifar10_root(tmp_path, monkeypatch):
    info = write_cifar(tmp_path, "cifar10")
    monkeypatch.setattr(CIFAR_SPECS["cifar10"], "md5", info["md5"])
    return tmp_path, info


@pytest.fixture
def cifar100_root(tmp_path, monkeypatch):
    info = write_cifar(tmp_path, "cifar100")
    monkeypatch.setattr(CIFAR_SPECS["cifar100"], "md5", info["md5"])
    return tmp_path, info


# ---------------------------------------------------------------------------
# registry and errors

def test_registry_lists_builtins_and_rejects_unknown_names():
    assert {"mnist5k", "cifar10", "cifar100", "imagefolder", "synthetic"} <= set(list_datasets())
    with pytest.raises(ValueError, match="unknown dataset 'nope'.*cifar10.*mnist5k.*synthetic"):
        get_dataset("nope")


def test_unknown_option_is_named():
    with pytest.raises(ValueError, match="no option 'colour'.*valid options:.*n_train"):
        get_dataset("synthetic", colour=True)
    with pytest.raises(ValueError, match="no option 'image_size'"):
        get_dataset("mnist5k", image_size=32)


def test_register_custom_dataset(monkeypatch):
    monkeypatch.setattr(kd.dataset, "DATASETS", dict(kd.dataset.DATASETS))

    @register_dataset("tiny")
    def _tiny(root, download, seed, *, n: int = 10):
        s = make_split(n, channels=1)
        return kd.Dataset("tiny", 5, 1, 8, (0.5,), (0.25,), s, None, s)

    assert "tiny" in list_datasets()
    assert len(get_dataset("tiny", n=20).train) == 20
    with pytest.raises(ValueError, match="already registered"):
        register_dataset("tiny")(_tiny)


# ---------------------------------------------------------------------------
# mnist5k

@pytest.fixture(scope="module")
def mnist():
    return get_dataset("mnist5k")


def test_mnist5k_shapes_sizes_and_disjointness(mnist):
    assert (mnist.num_classes, mnist.channels, mnist.image_size, mnist.kind) == (10, 1, 28, "memory")
    assert len(mnist.mean) == len(mnist.std) == 1
    sizes = {k: len(v) for k, v in mnist.splits.items()}
    assert sizes == {"train": 3500, "val": 500, "test": 1000}
    for name, per_class in (("train", 350), ("val", 50), ("test", 100)):
        s = mnist.splits[name]
        assert s.images.dtype == torch.uint8 and s.images.shape[1:] == (1, 28, 28)
        assert s.labels.dtype == torch.int64 and s.ids.dtype == torch.int64
        assert Counter(s.labels.tolist()) == {c: per_class for c in range(10)}  # stratified
        assert s.images.float().mean() > 10  # real digits, not blank
    ids = [set(s.ids.tolist()) for s in mnist.splits.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert set.union(*ids) == set(range(5000))


def test_mnist5k_is_deterministic_and_matches_load_mnist5k(mnist):
    raw = load_mnist5k()
    for name in ("train", "val", "test"):
        assert torch.equal(raw[name].images, mnist.splits[name].images)
        assert torch.equal(raw[name].labels, mnist.splits[name].labels)
        assert torch.equal(raw[name].ids, mnist.splits[name].ids)


def test_mnist5k_default_superclasses(mnist):
    assert mnist.num_coarse_classes == 3
    want = torch.tensor([DIGIT_SUPERCLASSES[d] for d in range(10)])
    assert torch.equal(mnist.superclass_map, want)
    for s in mnist.splits.values():
        assert torch.equal(s.coarse_labels, want[s.labels])


def test_mnist5k_val_size_recarves_from_train_and_val(mnist):
    ds = get_dataset("mnist5k", val_size=1000, seed=1)
    assert (len(ds.train), len(ds.val)) == (3000, 1000)
    assert Counter(ds.val.labels.tolist()) == {c: 100 for c in range(10)}
    pool = set(mnist.train.ids.tolist()) | set(mnist.val.ids.tolist())
    assert set(ds.train.ids.tolist()) | set(ds.val.ids.tolist()) == pool
    assert not set(ds.train.ids.tolist()) & set(ds.val.ids.tolist())
    assert torch.equal(ds.test.ids, mnist.test.ids)  # the test split is never touched
    assert torch.equal(ds.test.images, mnist.test.images)


# ---------------------------------------------------------------------------
# CIFAR

def test_cifar10_loads_fixture(cifar10_root):
    root, info = cifar10_root
    ds = get_dataset("cifar10", root=str(root))
    assert (ds.num_classes, ds.channels, ds.image_size, ds.val) == (10, 3, 32, None)
    assert ds.classes == tuple(f"c{i}" for i in range(10))
    assert len(ds.train) == 100 and len(ds.test) == 20
    data = np.concatenate([d for d, _ in info["train"]])
    assert torch.equal(ds.train.images, torch.from_numpy(data).view(-1, 3, 32, 32))
    # the 3072 bytes are the R, G, B planes in turn: pixel (row 1, col 2) of G
    assert ds.train.images[0, 1, 1, 2] == data[0, 1024 + 32 + 2]
    assert torch.equal(ds.train.labels, torch.from_numpy(np.concatenate([y for _, y in info["train"]])))
    assert torch.equal(ds.test.labels, torch.from_numpy(info["test"][0][1]))
    assert torch.equal(ds.train.ids, torch.arange(100)) and torch.equal(ds.test.ids, torch.arange(100, 120))
    assert ds.train.coarse_labels is None and ds.num_coarse_classes is None


def test_cifar100_fine_and_coarse_labels(cifar100_root):
    root, info = cifar100_root
    ds = get_dataset("cifar100", root=str(root))
    assert ds.num_classes == 100 and ds.num_coarse_classes == 20
    assert ds.classes[7] == "fine07" and ds.meta["coarse_classes"][3] == "coarse03"
    fine = torch.from_numpy(info["train"][0][1])
    assert torch.equal(ds.train.labels, fine)
    assert torch.equal(ds.train.coarse_labels, fine % 20)
    assert torch.equal(ds.superclass_map, torch.arange(100) % 20)
    assert torch.equal(ds.test.coarse_labels, ds.superclass_map[ds.test.labels])


def test_cifar_search_split_is_stratified_and_keeps_test(cifar10_root):
    root, _ = cifar10_root
    full = get_dataset("cifar10", root=str(root))
    ds = get_dataset("cifar10", root=str(root), val_size=0.2, seed=0)
    assert (len(ds.train), len(ds.val)) == (80, 20)
    assert torch.equal(ds.test.images, full.test.images) and torch.equal(ds.test.ids, full.test.ids)
    counts = Counter(full.train.labels.tolist())
    for c, k in Counter(ds.val.labels.tolist()).items():
        assert abs(k - 0.2 * counts[c]) <= 1


def test_cifar_md5_mismatch_names_file_digests_and_fix(cifar10_root):
    root, info = cifar10_root
    path = root / "cifar-10-batches-py" / "data_batch_3"
    blob = bytearray(path.read_bytes())
    blob[-10] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(IntegrityError) as err:
        get_dataset("cifar10", root=str(root))
    msg = str(err.value)
    assert "data_batch_3" in msg and info["md5"]["data_batch_3"] in msg and md5sum(path) in msg
    assert "re-download" in msg and "download=True" in msg


def test_cifar_corrupt_pickle_names_file(cifar10_root, monkeypatch):
    root, info = cifar10_root
    path = root / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(b"this is not a pickle")
    with pytest.raises(IntegrityError, match="test_batch: not a readable CIFAR pickle"):
        get_dataset("cifar10", root=str(root), check_integrity=False)
    # a pickle of the wrong shape (md5 made to match: it is the content that is wrong)
    _pickle(path, {"data": np.zeros((2, 10), np.uint8), "labels": [0, 1]})
    monkeypatch.setitem(CIFAR_SPECS["cifar10"].md5, "test_batch", md5sum(path))
    with pytest.raises(IntegrityError, match="test_batch: expected uint8 data"):
        get_dataset("cifar10", root=str(root))


def test_cifar_missing_files_suggest_download(tmp_path, cifar10_root):
    with pytest.raises(FileNotFoundError, match="CIFAR-100 not found.*train.*download=True"):
        get_dataset("cifar100", root=str(tmp_path / "empty"))
    root, _ = cifar10_root
    (root / "cifar-10-batches-py" / "batches.meta").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks batches\.meta\. Pass download=True"):
        get_dataset("cifar10", root=str(root))


def _tarball(src_root: Path, folder: str, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src_root / folder, arcname=folder)
    return dest


def test_cifar_download_from_local_tarball(tmp_path, monkeypatch):
    for key in ("cifar10", "cifar100"):
        spec = CIFAR_SPECS[key]
        src = tmp_path / f"src_{key}"
        info = write_cifar(src, key)
        archive = _tarball(src, spec.folder, tmp_path / spec.archive)
        monkeypatch.setattr(spec, "md5", info["md5"])
        monkeypatch.setattr(spec, "url", archive.as_uri())
        monkeypatch.setattr(spec, "archive_md5", md5sum(archive))
        root = tmp_path / f"root_{key}"
        ds = get_dataset(key, root=str(root), download=True)
        assert (root / spec.archive).is_file() and not list(root.glob("*.part"))
        want = np.concatenate([d for d, _ in info["train"]])
        assert torch.equal(ds.train.images.flatten(1), torch.from_numpy(want))
        # intact files: no second fetch (the URL now points nowhere)
        monkeypatch.setattr(spec, "url", (tmp_path / "gone.tar.gz").as_uri())
        assert len(get_dataset(key, root=str(root), download=True).train) == len(ds.train)


def test_cifar_download_repairs_corrupt_file_and_rejects_bad_archive(tmp_path, monkeypatch):
    spec = CIFAR_SPECS["cifar10"]
    info = write_cifar(tmp_path / "src", "cifar10")
    archive = _tarball(tmp_path / "src", spec.folder, tmp_path / "served.tar.gz")
    monkeypatch.setattr(spec, "md5", info["md5"])
    monkeypatch.setattr(spec, "url", archive.as_uri())
    monkeypatch.setattr(spec, "archive_md5", "0" * 32)
    root = tmp_path / "root"
    with pytest.raises(IntegrityError, match="served.tar.gz.part: md5 .* expected 0{32}"):
        get_dataset("cifar10", root=str(root), download=True)
    assert not (root / spec.archive).exists() and not list(root.glob("*.part"))

    monkeypatch.setattr(spec, "archive_md5", md5sum(archive))
    get_dataset("cifar10", root=str(root), download=True)
    (root / spec.folder / "data_batch_1").write_bytes(b"garbage")
    ds = get_dataset("cifar10", root=str(root), download=True)  # re-extracts the archive
    assert md5sum(root / spec.folder / "data_batch_1") == info["md5"]["data_batch_1"]
    assert len(ds.train) == 100


# ---------------------------------------------------------------------------
# imagefolder

def _png(path: Path, rgb, size=(20, 14)) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, rgb).save(path)


def test_imagefolder_loads_sorted_classes_resized(tmp_path):
    colours = {"zebra": (250, 10, 10), "ant": (10, 250, 10), "moth": (10, 10, 250)}
    for split, n in (("train", 3), ("test", 2)):
        for name, rgb in colours.items():
            for i in range(n):
                _png(tmp_path / split / name / f"{i}.png", rgb, size=(20 + 3 * i, 14))
    (tmp_path / "train" / "ant" / "notes.txt").write_text("ignored")
    ds = get_dataset("imagefolder", root=str(tmp_path), image_size=16)
    assert ds.classes == ("ant", "moth", "zebra") and ds.num_classes == 3
    assert ds.train.images.shape == (9, 3, 16, 16) and ds.test.images.shape == (6, 3, 16, 16)
    assert ds.val is None and ds.kind == "memory"
    assert Counter(ds.train.labels.tolist()) == {0: 3, 1: 3, 2: 3}
    for s in (ds.train, ds.test):  # each image is its class colour
        for img, y in zip(s.images, s.labels):
            rgb = colours[ds.classes[int(y)]]
            assert (img.float().mean((1, 2)) - torch.tensor(rgb)).abs().max() < 2
    assert len(ds.mean) == 3 and all(0 < m < 1 for m in ds.mean)
    gray = get_dataset("imagefolder", root=str(tmp_path), image_size=8, channels=1)
    assert gray.train.images.shape == (9, 1, 8, 8) and gray.channels == 1


def test_imagefolder_val_and_test(tmp_path):
    for split in ("train", "val", "test"):
        for c in ("a", "b"):
            _png(tmp_path / split / c / "x.jpg", (100, 100, 100))
    ds = get_dataset("imagefolder", root=str(tmp_path), image_size=8)
    assert (len(ds.train), len(ds.val), len(ds.test)) == (2, 2, 2)
    assert len(set(torch.cat([ds.train.ids, ds.val.ids, ds.test.ids]).tolist())) == 6


def test_imagefolder_errors(tmp_path):
    with pytest.raises(ValueError, match="needs root"):
        get_dataset("imagefolder")
    with pytest.raises(FileNotFoundError, match="train does not exist"):
        get_dataset("imagefolder", root=str(tmp_path))
    (tmp_path / "train").mkdir()
    with pytest.raises(FileNotFoundError, match="no class folders"):
        get_dataset("imagefolder", root=str(tmp_path))
    (tmp_path / "train" / "a").mkdir()
    (tmp_path / "test" / "a").mkdir(parents=True)
    with pytest.raises(FileNotFoundError, match="train: no .png"):
        get_dataset("imagefolder", root=str(tmp_path))
    _png(tmp_path / "train" / "a" / "0.png", (1, 2, 3))
    _png(tmp_path / "test" / "zz" / "0.png", (1, 2, 3))
    with pytest.raises(ValueError, match=r"class folders \['zz'\] do not exist under train"):
        get_dataset("imagefolder", root=str(tmp_path))


# ---------------------------------------------------------------------------
# synthetic

def test_synthetic_is_deterministic_and_learnable():
    a = get_dataset("synthetic", n_train=200, n_test=100, num_classes=4, channels=2, image_size=8)
    b = get_dataset("synthetic", n_train=200, n_test=100, num_classes=4, channels=2, image_size=8)
    c = get_dataset("synthetic", n_train=200, n_test=100, num_classes=4, channels=2, image_size=8,
                    seed=1)
    assert a.train.images.shape == (200, 2, 8, 8) and a.test.images.shape == (100, 2, 8, 8)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.test.labels, b.test.labels)
    assert not torch.equal(a.train.images, c.train.images)
    assert Counter(a.train.labels.tolist()) == {k: 50 for k in range(4)}
    # nearest class mean of the training data classifies the test data
    centres = torch.stack([a.train.images[a.train.labels == k].float().mean(0) for k in range(4)])
    d = ((a.test.images.float()[:, None] - centres[None]) ** 2).flatten(2).sum(-1)
    assert (d.argmin(1) == a.test.labels).float().mean() > 0.95


# ---------------------------------------------------------------------------
# validation carving

def test_carve_validation_sizes_stratified_deterministic():
    s = make_split(103, num_classes=5)
    s.labels[:30] = 0  # unbalanced classes
    tr, va = carve_validation(s, 20, seed=3)
    assert (len(tr), len(va)) == (83, 20)
    ids_tr, ids_va = set(tr.ids.tolist()), set(va.ids.tolist())
    assert not ids_tr & ids_va and ids_tr | ids_va == set(s.ids.tolist())
    full, got = Counter(s.labels.tolist()), Counter(va.labels.tolist())
    for c in full:
        assert abs(got[c] - 20 * full[c] / 103) < 1
    for part in (tr, va):  # rows stay aligned with their ids and keep the original order
        assert torch.equal(part.images, s.images[part.ids - 100])
        assert torch.equal(part.labels, s.labels[part.ids - 100])
        assert bool((part.ids.diff() > 0).all())
    tr2, va2 = carve_validation(s, 20, seed=3)
    assert torch.equal(va.ids, va2.ids) and torch.equal(tr.ids, tr2.ids)
    _, va3 = carve_validation(s, 20, seed=4)
    assert not torch.equal(va.ids, va3.ids)
    assert len(carve_validation(s, 0.25)[1]) == round(0.25 * 103)


@pytest.mark.parametrize("bad", [0, 103, 200, 0.0, 1.0, -0.1, True, "10"])
def test_carve_validation_rejects_bad_sizes(bad):
    with pytest.raises(ValueError, match="val_size"):
        carve_validation(make_split(103), bad)


def test_stratified_counts_are_exact():
    labels = torch.tensor([0] * 7 + [1] * 3 + [2] * 1)
    for total in range(1, 11):
        counts = stratified_counts(labels, total)
        assert sum(counts.values()) == total
        assert all(0 <= counts[c] <= n for c, n in ((0, 7), (1, 3), (2, 1)))


def test_split_validates_dtypes():
    with pytest.raises(ValueError, match="uint8"):
        Split(torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64))
    with pytest.raises(ValueError, match="labels must be int64"):
        Split(torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64))


# ---------------------------------------------------------------------------
# superclass maps

def test_load_superclass_map_sources(tmp_path):
    want = torch.tensor([1, 0, 1, 2])
    assert torch.equal(load_superclass_map({0: 1, 1: 0, 2: 1, 3: 2}, 4), want)
    assert torch.equal(load_superclass_map([1, 0, 1, 2], 4), want)
    path = tmp_path / "map.json"
    path.write_text(json.dumps({"0": 1, "1": 0, "2": 1, "3": 2}))
    assert torch.equal(load_superclass_map(str(path), 4), want)
    names = ("cat", "dog", "car", "bus")
    by_name = {"cat": "animal", "dog": "animal", "car": "vehicle", "bus": "vehicle"}
    assert torch.equal(load_superclass_map(by_name, 4, names), torch.tensor([0, 0, 1, 1]))


def test_load_superclass_map_errors(tmp_path):
    with pytest.raises(ValueError, match=r"does not cover every class: missing \[2, 3\]"):
        load_superclass_map({0: 0, 1: 1}, 4)
    with pytest.raises(ValueError, match=r"not classes 0\.\.3.*\[7\]"):
        load_superclass_map({0: 0, 1: 0, 2: 0, 3: 0, 7: 1}, 4)
    with pytest.raises(ValueError, match=r"missing \[2, 3\]"):
        load_superclass_map([0, 1], 4)
    with pytest.raises(ValueError, match=r"not classes 0\.\.3.*\[4\]"):
        load_superclass_map([0, 1, 0, 1, 0], 4)
    with pytest.raises(ValueError, match="non-negative ints"):
        load_superclass_map([0, -1, 0, 0], 4)
    with pytest.raises(ValueError, match="cannot read superclass map"):
        load_superclass_map(str(tmp_path / "missing.json"), 4)


def test_get_dataset_superclasses_option(tmp_path):
    path = tmp_path / "m.json"
    path.write_text(json.dumps([k % 2 for k in range(4)]))
    ds = get_dataset("synthetic", num_classes=4, n_train=40, n_test=8, superclasses=str(path))
    assert ds.num_coarse_classes == 2
    assert torch.equal(ds.train.coarse_labels, ds.train.labels % 2)
    assert torch.equal(ds.test.coarse_labels, ds.test.labels % 2)
    with pytest.raises(ValueError, match="missing"):
        get_dataset("synthetic", num_classes=4, n_train=40, n_test=8, superclasses=[0, 1])


# ---------------------------------------------------------------------------
# batched augmentation

def _reference_augment(x, p: AugParams, pad, mode):
    mode = {"reflect": "reflect", "zero": "constant"}[mode]
    out = []
    H, W = x.shape[2:]
    for b in range(len(x)):
        padded = F.pad(x[b : b + 1].float(), (pad,) * 4, mode=mode)
        crop = padded[..., p.dy[b] : p.dy[b] + H, p.dx[b] : p.dx[b] + W]
        out.append(crop.flip(-1) if p.flip[b] else crop)
    return torch.cat(out).to(torch.uint8)


@pytest.mark.parametrize("mode", ["reflect", "zero"])
@pytest.mark.parametrize("pad,hw", [(4, (12, 10)), (2, (5, 7)), (1, (2, 2))])
def test_augment_batch_matches_pad_crop_flip_reference(mode, pad, hw):
    x = torch.randint(0, 256, (32, 3, *hw), dtype=torch.uint8)
    p = Augment(pad=pad, pad_mode=mode).sample(32, torch.Generator().manual_seed(0))
    assert torch.equal(augment_batch(x, p, pad, mode), _reference_augment(x, p, pad, mode))
    assert set(p.dy.tolist()) | set(p.dx.tolist()) <= set(range(2 * pad + 1))


def test_augment_options():
    with pytest.raises(ValueError, match="pad_mode"):
        Augment(pad_mode="edge")
    g = torch.Generator().manual_seed(0)
    p = Augment(flip=False).sample(64, g)
    assert not p.flip.any() and p.dy.unique().numel() > 1
    p = Augment(crop=False).sample(64, g)
    assert (p.dy == 4).all() and (p.dx == 4).all() and 0 < int(p.flip.sum()) < 64
    assert not Augment(pad=0, flip=False).active


# ---------------------------------------------------------------------------
# TensorLoader

@pytest.mark.parametrize("device", DEVICES)
def test_loader_shapes_normalisation_and_length(device):
    s = make_split(70, size=8)
    L = TensorLoader(s, 16, shuffle=False, mean=MEAN, std=STD, device=device)
    assert len(L) == 4 and L.num_samples == 70
    batches = list(L)
    assert len(batches) == 4
    x, y, idx = batches[0]
    assert x.shape == (16, 3, 8, 8) and x.dtype == torch.float32 and x.device.type == device
    assert y.dtype == torch.int64 and idx.dtype == torch.int64 and y.shape == idx.shape == (16,)
    assert L.images.dtype == torch.uint8 and L.images.device.type == device
    want = (s.images[:16].double() / 255 - torch.tensor(MEAN).view(1, 3, 1, 1).double()) \
        / torch.tensor(STD).view(1, 3, 1, 1).double()
    torch.testing.assert_close(x.cpu().double(), want, atol=1e-5, rtol=1e-5)
    assert torch.equal(idx.cpu(), torch.arange(16))


def test_loader_drop_last_and_eval_mode():
    s = make_split(70)
    assert len(TensorLoader(s, 16, mean=MEAN, std=STD)) == 4
    got = epoch_batches(TensorLoader(s, 16, drop_last=True, mean=MEAN, std=STD))
    assert [len(b[1]) for b in got] == [16] * 4
    got = epoch_batches(TensorLoader(s, 16, drop_last=False, mean=MEAN, std=STD))
    assert [len(b[1]) for b in got] == [16] * 4 + [6]
    assert sorted(torch.cat([b[2] for b in got]).tolist()) == list(range(70))
    ev = TensorLoader.eval(s, 32, mean=MEAN, std=STD)
    assert (ev.shuffle, ev.drop_last, ev.augment) == (False, False, None)
    for _ in range(2):  # same every epoch, in order, un-augmented
        got = epoch_batches(ev)
        assert [len(b[1]) for b in got] == [32, 32, 6]
        assert torch.equal(torch.cat([b[2] for b in got]), torch.arange(70))
        assert torch.equal(denormalize(torch.cat([b[0] for b in got])), s.images.long())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mode", ["reflect", "zero"])
def test_loader_labels_follow_their_samples_through_augmentation(device, mode):
    s = coded_split(300)
    L = TensorLoader(s, 32, augment=Augment(pad_mode=mode), mean=MEAN, std=STD, device=device,
                     seed=5)
    seen = []
    for x, y, idx in L:
        u = denormalize(x)
        centre = u[:, :, 6, 6]  # pad 4 never reaches the centre of a 12x12 image
        idx, y = idx.cpu(), y.cpu()
        assert torch.equal(centre[:, 0] + 256 * centre[:, 1], idx)
        assert torch.equal(centre[:, 2], y) and torch.equal(y, s.labels[idx])
        if mode == "reflect":
            assert (u == centre[:, :, None, None]).all()
        seen.append(idx)
    assert len(torch.cat(seen).unique()) == len(L) * 32


def test_loader_flips_half_the_samples():
    n, W = 4000, 8
    ramp = torch.arange(W, dtype=torch.uint8).expand(n, 3, 5, W).contiguous()
    s = Split(ramp, torch.zeros(n, dtype=torch.int64))
    L = TensorLoader(s, 500, augment=Augment(crop=False), mean=MEAN, std=STD, seed=0)
    flips = 0
    for x, _, _ in L:
        u = denormalize(x)
        fwd = (u == torch.arange(W)).flatten(1).all(1)
        back = (u == torch.arange(W).flip(0)).flatten(1).all(1)
        assert (fwd ^ back).all()
        flips += int(back.sum())
    assert abs(flips / n - 0.5) < 0.03


def test_loader_zero_pad_crops_are_shifted_content():
    n, H, W, pad = 200, 10, 12, 4
    base = (torch.arange(H * W) + 1).view(1, 1, H, W)  # unique non-zero pixels
    s = Split(base.expand(n, 3, H, W).to(torch.uint8).contiguous(), torch.zeros(n, dtype=torch.int64))
    L = TensorLoader(s, 50, augment=Augment(pad=pad, pad_mode="zero"), mean=MEAN, std=STD)
    shifts = set()
    for x, _, _ in L:
        for img in denormalize(x)[:, 0]:
            # locate the crop from the centre pixel, then the whole image must match it
            v = int(img[H // 2, W // 2]) - 1
            flipped = int(img[H // 2, W // 2 + 1]) - 1 == v - 1
            dy = v // W - H // 2
            dx = v % W - (W - 1 - W // 2 if flipped else W // 2)
            assert abs(dy) <= pad and abs(dx) <= pad
            padded = F.pad(base[0, 0], (pad,) * 4)
            want = padded[dy + pad : dy + pad + H, dx + pad : dx + pad + W]
            assert torch.equal(img, want.flip(-1) if flipped else want)
            shifts.add((dy, dx))
    assert len(shifts) > 40  # most of the 81 offsets occur


def test_loader_is_deterministic_and_resumable():
    s = coded_split(200)
    mk = lambda seed=0: TensorLoader(s, 32, augment=Augment(), mean=MEAN, std=STD,  # noqa: E731
                                     seed=seed)
    a, b = mk(), mk()
    e0, e1, e2 = (epoch_batches(a) for _ in range(3))  # iterating advances the epoch
    assert a.epoch == 3
    assert_same_batches(epoch_batches(b, 2), e2)  # a "resumed" loader reproduces epoch 2
    assert_same_batches(epoch_batches(b, 0), e0)
    assert_same_batches(epoch_batches(b), e1)
    assert not torch.equal(e0[0][2], e1[0][2])  # epochs differ
    assert not torch.equal(epoch_batches(mk(seed=1), 0)[0][2], e0[0][2])  # seeds differ


def test_loader_augmentation_is_reproducible_per_epoch():
    s = make_split(128, size=12)
    mk = lambda: TensorLoader(s, 64, augment=Augment(), mean=MEAN, std=STD, seed=7)  # noqa: E731
    a = [epoch_batches(mk(), e) for e in (0, 1)]
    assert_same_batches(epoch_batches(mk(), 1), a[1])
    # the same samples of two epochs get different crops/flips
    x0 = torch.cat([b[0] for b in a[0]])[torch.argsort(torch.cat([b[2] for b in a[0]]))]
    x1 = torch.cat([b[0] for b in a[1]])[torch.argsort(torch.cat([b[2] for b in a[1]]))]
    assert not torch.equal(x0, x1)


@pytest.mark.parametrize("n,ws", [(100, 3), (64, 4), (7, 2)])
def test_loader_shards_cover_each_sample_once(n, ws):
    s = make_split(n)
    for epoch in (0, 1):
        parts = []
        for rank in range(ws):
            L = TensorLoader(s, 8, drop_last=False, mean=MEAN, std=STD, rank=rank,
                             world_size=ws, seed=3)
            idx = torch.cat([b[2] for b in epoch_batches(L, epoch)])
            assert len(idx) == L.num_samples
            parts.append(idx)
        assert sorted(torch.cat(parts).tolist()) == list(range(n))
        assert max(map(len, parts)) - min(map(len, parts)) <= 1


def test_loader_drop_last_shards_are_equal_and_disjoint():
    s = make_split(103)
    Ls = [TensorLoader(s, 8, augment=Augment(), mean=MEAN, std=STD, rank=r, world_size=3)
          for r in range(3)]
    assert {len(L) for L in Ls} == {34 // 8}
    got = [epoch_batches(L, 5) for L in Ls]
    idx = [torch.cat([b[2] for b in g]) for g in got]
    assert all(len(i) == 32 for i in idx)
    assert len(set(torch.cat(idx).tolist())) == 96
    p = [L.augment_params(5, 34) for L in Ls]  # each rank draws its own augmentation
    assert not torch.equal(p[0].dy, p[1].dy)


def test_loader_channels_last():
    s = make_split(40)
    L = TensorLoader(s, 8, augment=Augment(), mean=MEAN, std=STD, channels_last=True)
    ref = TensorLoader(s, 8, augment=Augment(), mean=MEAN, std=STD)
    for (x, _, i), (xr, _, ir) in zip(L, ref):
        assert x.is_contiguous(memory_format=torch.channels_last)
        assert torch.equal(x, xr) and torch.equal(i, ir)


def test_loader_on_mnist5k(mnist):
    L = TensorLoader(mnist.train, 64, augment=Augment(pad=2), mean=mnist.mean, std=mnist.std)
    x, y, idx = next(iter(L))
    assert x.shape == (64, 1, 28, 28) and torch.equal(y, mnist.train.labels[idx])
    assert abs(float(x.mean())) < 0.5
    assert len(L) == 3500 // 64


def test_loader_errors():
    s = make_split(10, size=4)
    with pytest.raises(ValueError, match="rank"):
        TensorLoader(s, 4, mean=MEAN, std=STD, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size"):
        TensorLoader(s, 0, mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="one per channel"):
        TensorLoader(s, 4, mean=(0.5,), std=(0.5,))
    with pytest.raises(ValueError, match="reflect padding 4 is too large"):
        TensorLoader(s, 4, augment=Augment(pad=4), mean=MEAN, std=STD)
    TensorLoader(s, 4, augment=Augment(pad=4, pad_mode="zero"), mean=MEAN, std=STD)
    with pytest.raises(ValueError, match="epoch"):
        TensorLoader(s, 4, mean=MEAN, std=STD).set_epoch(-1)


def test_cli_tells_a_corrupt_dataset_in_one_line_with_cli_words(cifar10_root, tmp_path, capsys):
    from ktgfast.cli import main as cli

    root, _ = cifar10_root
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(b"this is not a pickle")
    code = cli(["train", "--data", "cifar10", "--data-root", str(root), "--epochs", "1",
                "--val-size", "10", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1, err
    assert err[0].startswith("ktgfast train: error: ") and "test_batch" in err[0], err
    assert "--download true" in err[0] and "download=True" not in err[0]
    assert err[1:] == ["(--debug or KTGFAST_DEBUG=1 shows the traceback)"]
