"""Tests of resnet_np.data: CIFAR files, image folders, digits, transforms, loader."""
import faulthandler
import io
import os
import pickle
import struct
import tarfile
import threading
import time

import numpy as np
import pytest

from resnet_np.data import (CIFAR10_MEAN, CIFAR10_STD, IMAGENET_MEAN, IMAGENET_STD, DataLoader,
                            Dataset, cifar_augment, imagenet_classes, imagenet_preprocess, list_classes,
                            load_cifar10, load_cifar100, load_dataset, load_digits, load_image,
                            load_image_folder, normalize, random_crop, random_flip,
                            resize_images, stratified_split)

Image = pytest.importorskip("PIL.Image", reason="the image tests need Pillow (pip install pillow)")


# --------------------------------------------------------------------------- #
# CIFAR files in the official format
# --------------------------------------------------------------------------- #
class Py2Pickler(pickle._Pickler):
    """Write pickles as the official CIFAR files were written: Python 2, protocol 2.

    Python 2 stored its byte strings with the STRING opcodes, which Python 3
    reads back as bytes under ``encoding="bytes"``; Python 3's own protocol 2
    would wrap them in ``_codecs.encode`` calls instead. NumPy 1 also named
    the array constructor ``numpy.core.multiarray``, not ``numpy._core``.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj):
        if isinstance(obj, str):
            obj = obj.encode("ascii")
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str
    dispatch[str] = save_py2_str


def py2_pickle(obj):
    buffer = io.BytesIO()
    Py2Pickler(buffer, protocol=2).dump(obj)
    return buffer.getvalue().replace(b"numpy._core.multiarray", b"numpy.core.multiarray")


def test_py2_pickle_matches_the_official_format():
    raw = py2_pickle({b"data": np.zeros((1, 3072), np.uint8), b"labels": [3]})
    assert raw[:2] == b"\x80\x02"                      # protocol 2
    assert b"_codecs" not in raw and b"numpy.core.multiarray" in raw
    content = pickle.loads(raw, encoding="bytes")
    assert set(content) == {b"data", b"labels"} and content[b"labels"] == [3]


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer",
                 "dog", "frog", "horse", "ship", "truck"]


def cifar10_files(n=4, seed=0):
    """The official CIFAR-10 files with ``n`` images per batch: {name: bytes}, and the truth."""
    rng = np.random.default_rng(seed)
    files, truth = {}, {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=n)]
        files[name] = py2_pickle({b"batch_label": b"training batch", b"labels": labels,
                                  b"data": data, b"filenames": [b"x.png"] * n})
        truth[name] = (data, labels)
    files["batches.meta"] = py2_pickle({b"num_cases_per_batch": n, b"num_vis": 3072,
                                        b"label_names": [s.encode() for s in CIFAR10_NAMES]})
    return files, truth


def cifar100_files(n=5, seed=1):
    rng = np.random.default_rng(seed)
    files, truth = {}, {}
    for name in ("train", "test"):
        data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
        fine = [int(v) for v in rng.integers(0, 100, size=n)]
        files[name] = py2_pickle({b"filenames": [b"x.png"] * n, b"batch_label": name.encode(),
                                  b"fine_labels": fine, b"coarse_labels": [v // 5 for v in fine],
                                  b"data": data})
        truth[name] = (data, fine)
    files["meta"] = py2_pickle({b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
                                b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]})
    return files, truth


def write_folder(folder, files):
    folder.mkdir(parents=True)
    for name, raw in files.items():
        (folder / name).write_bytes(raw)


def write_archive(path, top, files):
    """A .tar.gz laid out as the official one: a top folder holding the files."""
    with tarfile.open(path, "w:gz") as tar:
        entry = tarfile.TarInfo(top)
        entry.type = tarfile.DIRTYPE
        tar.addfile(entry)
        for name, raw in [("readme.html", b"<html></html>")] + sorted(files.items()):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))


def expected_images(data):
    """(n, 3072) R, G, B planes -> (n, 32, 32, 3), written pixel by pixel."""
    n = len(data)
    out = np.zeros((n, 32, 32, 3), np.uint8)
    for row in range(32):
        for col in range(32):
            for channel in range(3):
                out[:, row, col, channel] = data[:, channel * 1024 + row * 32 + col]
    return out


@pytest.mark.parametrize("packed", [False, True], ids=["extracted", "archive"])
def test_cifar10_decodes_pixels_labels_and_names(tmp_path, packed):
    files, truth = cifar10_files()
    if packed:
        write_archive(tmp_path / "cifar-10-python.tar.gz", "cifar-10-batches-py", files)
    else:
        write_folder(tmp_path / "cifar-10-batches-py", files)

    train = load_cifar10(tmp_path, "train")
    data = np.concatenate([truth[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = sum((truth[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    assert train.images.dtype == np.uint8 and train.images.shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(train.images, expected_images(data))
    assert train.labels.dtype == np.int64 and train.labels.tolist() == labels
    assert train.classes == CIFAR10_NAMES and train.name == "cifar10/train"

    test = load_cifar10(tmp_path, "test")
    np.testing.assert_array_equal(test.images, expected_images(truth["test_batch"][0]))
    assert test.labels.tolist() == truth["test_batch"][1]
    if packed:  # read from the archive, nothing written beside it
        assert sorted(os.listdir(tmp_path)) == ["cifar-10-python.tar.gz"]


def test_cifar10_pixel_layout_by_hand(tmp_path):
    files, _ = cifar10_files(n=1)
    data = np.zeros((1, 3072), np.uint8)
    data[0, :1024], data[0, 1024:2048], data[0, 2048:] = 10, 20, 30   # R, G, B planes
    data[0, 1 * 32 + 2] = 99              # red of row 1, column 2
    data[0, 2048 + 31 * 32 + 0] = 77      # blue of row 31, column 0
    files["test_batch"] = py2_pickle({b"labels": [7], b"data": data})
    write_folder(tmp_path / "cifar-10-batches-py", files)
    image = load_cifar10(tmp_path, "test").images[0]
    assert image[0, 0].tolist() == [10, 20, 30]
    assert image[1, 2].tolist() == [99, 20, 30]
    assert image[31, 0].tolist() == [10, 20, 77]


@pytest.mark.parametrize("packed", [False, True], ids=["extracted", "archive"])
def test_cifar100_uses_fine_labels(tmp_path, packed):
    files, truth = cifar100_files()
    if packed:
        write_archive(tmp_path / "cifar-100-python.tar.gz", "cifar-100-python", files)
    else:
        write_folder(tmp_path / "cifar-100-python", files)
    for split in ("train", "test"):
        dataset = load_cifar100(tmp_path, split)
        np.testing.assert_array_equal(dataset.images, expected_images(truth[split][0]))
        assert dataset.labels.tolist() == truth[split][1]
        assert dataset.classes == [f"fine{i}" for i in range(100)]
        assert dataset.name == f"cifar100/{split}"


def test_cifar_missing_files_say_what_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10(tmp_path / "nowhere")
    message = str(info.value)
    assert "\n" not in message
    for part in ("data_batch_1", "batches.meta", "cifar-10-python.tar.gz",
                 str(tmp_path / "nowhere" / "cifar-10-batches-py"),
                 "https://www.cs.toronto.edu/~kriz/cifar.html"):
        assert part in message
    with pytest.raises(FileNotFoundError, match="cifar-100-python.tar.gz"):
        load_cifar100(tmp_path)


def test_cifar_incomplete_folder_is_not_found(tmp_path):
    files, _ = cifar10_files()
    del files["data_batch_3"]
    write_folder(tmp_path / "cifar-10-batches-py", files)
    with pytest.raises(FileNotFoundError, match="data_batch_3"):
        load_cifar10(tmp_path, "train")
    assert len(load_cifar10(tmp_path, "test")) == 4   # the test split is complete


def test_cifar_truncated_batch_names_the_file(tmp_path):
    files, _ = cifar10_files()
    files["data_batch_2"] = files["data_batch_2"][:len(files["data_batch_2"]) // 2]
    write_folder(tmp_path / "cifar-10-batches-py", files)
    with pytest.raises(ValueError, match="data_batch_2.*truncated or corrupt"):
        load_cifar10(tmp_path)


def test_cifar_garbage_meta_names_the_file(tmp_path):
    files, _ = cifar10_files()
    files["batches.meta"] = b"this is not a pickle"
    write_folder(tmp_path / "cifar-10-batches-py", files)
    with pytest.raises(ValueError, match="batches.meta"):
        load_cifar10(tmp_path, "test")


def test_cifar_truncated_archive_names_the_archive(tmp_path):
    files, _ = cifar10_files(n=200)   # large enough that half the archive lacks members
    archive = tmp_path / "cifar-10-python.tar.gz"
    write_archive(archive, "cifar-10-batches-py", files)
    archive.write_bytes(archive.read_bytes()[:archive.stat().st_size // 2])
    with pytest.raises(ValueError, match="cifar-10-python.tar.gz"):
        load_cifar10(tmp_path)


@pytest.mark.parametrize("damage", ["pixel", "crc"])
def test_cifar_corrupted_archive_is_called_corrupt(tmp_path, damage):
    """A changed byte that gzip's CRC catches (stored blocks: the pixels change silently)."""
    import gzip
    files, _ = cifar10_files(n=20)
    plain = tmp_path / "plain.tar.gz"
    write_archive(plain, "cifar-10-batches-py", files)
    archive = tmp_path / "cifar-10-python.tar.gz"
    raw = bytearray(gzip.compress(gzip.decompress(plain.read_bytes()), compresslevel=0))
    if damage == "pixel":
        at = raw.find(files["data_batch_1"][-3000:-2990])   # inside the last batch's pixels
        raw[at] ^= 0xFF
    else:
        raw[-8] ^= 0xFF                                       # the CRC field itself
    archive.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="cifar-10-python.tar.gz: truncated or corrupt archive"):
        load_cifar10(tmp_path, "train")


def test_cifar_archive_without_the_members(tmp_path):
    write_archive(tmp_path / "cifar-10-python.tar.gz", "something-else", {"x": b"1"})
    with pytest.raises(ValueError, match="no member cifar-10-batches-py/test_batch"):
        load_cifar10(tmp_path, "test")


def test_cifar_wrong_shapes_are_reported(tmp_path):
    files, _ = cifar10_files()
    files["test_batch"] = py2_pickle({b"labels": [1, 2], b"data": np.zeros((2, 100), np.uint8)})
    write_folder(tmp_path / "cifar-10-batches-py", files)
    with pytest.raises(ValueError, match=r"test_batch.*\(n, 3072\)"):
        load_cifar10(tmp_path, "test")
    files["test_batch"] = py2_pickle({b"labels": [1], b"data": np.zeros((2, 3072), np.uint8)})
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(files["test_batch"])
    with pytest.raises(ValueError, match="test_batch: 2 images but 1 labels"):
        load_cifar10(tmp_path, "test")


class _CallsGetcwd:
    def __reduce__(self):
        return os.getcwd, ()


def test_cifar_pickle_may_not_call_functions(tmp_path):
    files, _ = cifar10_files()
    files["test_batch"] = pickle.dumps({b"data": _CallsGetcwd()}, protocol=2)
    write_folder(tmp_path / "cifar-10-batches-py", files)
    with pytest.raises(ValueError, match="test_batch.*unexpected object .*getcwd"):
        load_cifar10(tmp_path, "test")


def test_cifar_reads_python3_pickles_too(tmp_path):
    files, truth = cifar10_files()
    data, labels = truth["test_batch"]
    files["test_batch"] = pickle.dumps({b"data": data, b"labels": labels}, protocol=2)
    write_folder(tmp_path / "cifar-10-batches-py", files)
    np.testing.assert_array_equal(load_cifar10(tmp_path, "test").images, expected_images(data))


def test_load_dataset_cifar(tmp_path, monkeypatch):
    files, _ = cifar10_files()
    write_folder(tmp_path / "data" / "cifar-10-batches-py", files)
    monkeypatch.chdir(tmp_path)   # the default data_dir is ./data
    assert load_dataset("cifar10", split="test").images.shape == (4, 32, 32, 3)
    small = load_dataset("cifar10", tmp_path / "data", "test", image_size=16)
    assert small.images.shape == (4, 16, 16, 3) and small.images.dtype == np.uint8
    with pytest.raises(FileNotFoundError, match="cifar-100-python"):
        load_dataset("cifar100")


# --------------------------------------------------------------------------- #
# Image folder
# --------------------------------------------------------------------------- #
def make_image_folder(root):
    """root/cat: a red PNG and a grey PNG; root/ant: a JPEG. Returns the PNG pixels."""
    (root / "cat").mkdir(parents=True)
    (root / "ant").mkdir()
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 200
    red[2, 3] = (1, 2, 3)
    Image.fromarray(red).save(root / "cat" / "a.png")
    grey = np.arange(64, dtype=np.uint8).reshape(8, 8)
    Image.fromarray(grey).save(root / "cat" / "b.png")
    Image.fromarray(np.full((8, 8, 3), 128, np.uint8)).save(root / "ant" / "x.jpg", quality=95)
    (root / "cat" / ".DS_Store").write_bytes(b"\0\1junk")
    return red, grey


def test_image_folder_reads_sorted_classes_and_pixels(tmp_path):
    red, grey = make_image_folder(tmp_path)
    dataset = load_image_folder(tmp_path, image_size=8)
    assert dataset.classes == ["ant", "cat"]
    assert dataset.labels.tolist() == [0, 1, 1] and dataset.labels.dtype == np.int64
    assert dataset.images.shape == (3, 8, 8, 3) and dataset.images.dtype == np.uint8
    assert np.abs(dataset.images[0].astype(int) - 128).max() <= 2     # JPEG is lossy
    np.testing.assert_array_equal(dataset.images[1], red)
    np.testing.assert_array_equal(dataset.images[2], np.repeat(grey[..., None], 3, axis=-1))


def test_list_classes_is_sorted(tmp_path):
    names = [f"class{i:02d}" for i in np.random.default_rng(0).permutation(30)]
    for name in names:
        (tmp_path / name).mkdir()
    (tmp_path / ".hidden").mkdir()
    (tmp_path / "file.txt").write_text("not a class")
    assert list_classes(tmp_path) == sorted(names)


def test_image_folder_resizes(tmp_path):
    make_image_folder(tmp_path)
    assert load_image_folder(tmp_path, image_size=5).images.shape == (3, 5, 5, 3)


def test_image_folder_rejects_a_non_image(tmp_path):
    make_image_folder(tmp_path)
    (tmp_path / "cat" / "notes.txt").write_text("not an image")
    with pytest.raises(ValueError, match="notes.txt.*not a readable image"):
        load_image_folder(tmp_path)


def test_image_folder_empty_and_missing(tmp_path):
    with pytest.raises(ValueError, match="no class subfolders"):
        load_image_folder(tmp_path)
    (tmp_path / "cat").mkdir()
    with pytest.raises(ValueError, match="cat has no image files"):
        load_image_folder(tmp_path)
    with pytest.raises(FileNotFoundError, match="missing"):
        load_image_folder(tmp_path / "missing")


def test_load_dataset_folder_splits(tmp_path):
    make_image_folder(tmp_path / "train")
    make_image_folder(tmp_path / "test")
    (tmp_path / "test" / "ant" / "x.jpg").unlink()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "test" / "ant" / "y.png")
    train = load_dataset("folder", tmp_path, "train", image_size=8)
    test = load_dataset("folder", tmp_path, "test", image_size=8)
    assert len(train) == len(test) == 3 and train.classes == test.classes == ["ant", "cat"]
    assert test.images[0].max() == 0 and train.images[0].max() > 0   # each from its own folder

    (tmp_path / "test" / "bee").mkdir()
    with pytest.raises(ValueError, match="same class subfolders"):
        load_dataset("folder", tmp_path, "test")


def test_load_dataset_folder_without_splits_holds_out_a_seeded_fifth(tmp_path):
    for name, count in (("ant", 10), ("bee", 5)):
        (tmp_path / name).mkdir()
        for i in range(count):
            Image.fromarray(np.full((4, 4, 3), 20 * i + (name == "bee"), np.uint8)).save(
                tmp_path / name / f"{i}.png")
    train = load_dataset("folder", tmp_path, "train", image_size=4)
    test = load_dataset("folder", tmp_path, "test", image_size=4)
    assert (len(train), len(test)) == (12, 3)
    assert np.bincount(test.labels).tolist() == [2, 1]          # 20% of each class
    pixels = lambda d: {int(image[0, 0, 0]) for image in d.images}
    assert not pixels(train) & pixels(test)                      # disjoint
    again = load_dataset("folder", tmp_path, "test", image_size=4)
    np.testing.assert_array_equal(again.images, test.images)     # the same split every time
    assert "3 of 15 images) is held out for testing" in test.note and test.note == train.note
    (tmp_path / "train").mkdir()
    with pytest.raises(ValueError, match="only one of train/ and test/"):
        load_dataset("folder", tmp_path)
    with pytest.raises(ValueError, match="needs data_dir"):
        load_dataset("folder")


def test_load_dataset_folder_too_small_to_hold_out_is_refused(tmp_path):
    make_image_folder(tmp_path)     # 1 and 2 images per class: 20% rounds to none
    with pytest.raises(ValueError, match="too few images .* give train/ and test/ folders"):
        load_dataset("folder", tmp_path, "test", image_size=8)


# --------------------------------------------------------------------------- #
# Digits
# --------------------------------------------------------------------------- #
def test_digits_shapes_classes_and_split():
    pytest.importorskip("sklearn")
    train, test = load_digits("train"), load_digits("test")
    for dataset in (train, test):
        assert dataset.images.dtype == np.uint8 and dataset.images.shape[1:] == (32, 32, 3)
        assert dataset.labels.dtype == np.int64
        assert dataset.classes == [str(d) for d in range(10)]
    assert (len(train), len(test)) == (1438, 359)
    counts = np.bincount(test.labels, minlength=10) / np.bincount(
        np.concatenate([train.labels, test.labels]), minlength=10)
    assert np.all(np.abs(counts - 0.2) < 0.01)                   # stratified
    assert train.name == "digits/train" and test.name == "digits/test"


def test_digits_are_deterministic_and_real_pictures():
    sklearn_datasets = pytest.importorskip("sklearn.datasets")
    a, b = load_digits("test"), load_digits("test")
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)

    images = a.images.astype(float)
    np.testing.assert_array_equal(images[..., 0], images[..., 2])   # grey in 3 channels
    assert images.min() == 0 and images.max() == 255
    assert images.std(axis=(1, 2, 3)).min() > 30                     # strokes, not flat
    # Averaging 4x4 blocks brings each image back near its 8x8 source.
    source = sklearn_datasets.load_digits()
    _, test_index = stratified_split(source.target, 0.2, 0)
    np.testing.assert_array_equal(a.labels, source.target[test_index])
    blocks = images[..., 0].reshape(-1, 8, 4, 8, 4).mean(axis=(2, 4))
    original = source.images[test_index] * 255 / 16
    assert np.corrcoef(blocks.ravel(), original.ravel())[0, 1] > 0.95


def test_stratified_split_partitions_indices():
    labels = np.repeat(np.arange(3), [10, 20, 31])
    train, test = stratified_split(labels, 0.2, seed=5)
    assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(61))
    assert np.bincount(labels[test]).tolist() == [2, 4, 6]
    assert not np.array_equal(test, stratified_split(labels, 0.2, seed=6)[1])


def test_digits_without_sklearn_says_how_to_install(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)   # makes the import fail
    with pytest.raises(ImportError, match="pip install scikit-learn"):
        load_digits()


def test_load_dataset_digits_and_errors():
    pytest.importorskip("sklearn")
    assert load_dataset("digits", split="test", image_size=16).images.shape == (359, 16, 16, 3)
    with pytest.raises(ValueError, match="unknown dataset 'mnist'"):
        load_dataset("mnist")
    with pytest.raises(ValueError, match="split must be 'train' or 'test'"):
        load_dataset("digits", split="val")


def test_dataset_checks_its_arrays():
    images = np.zeros((2, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="uint8"):
        Dataset(images.astype(np.float32), np.zeros(2, np.int64), ["a"], "x")
    with pytest.raises(ValueError, match="int64"):
        Dataset(images, np.zeros(3, np.int64), ["a"], "x")
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 1\)"):
        Dataset(images, np.array([0, 1]), ["a"], "x")


# --------------------------------------------------------------------------- #
# Transforms
# --------------------------------------------------------------------------- #
def crop_offsets(out, images, padding):
    """The (top, left) of each crop, found by comparing with every candidate."""
    n, h, w, _ = images.shape
    size = out.shape[1]
    padded = np.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    offsets = []
    for b in range(n):
        matches = [(t, l) for t in range(h + 2 * padding - size + 1)
                   for l in range(w + 2 * padding - size + 1)
                   if np.array_equal(out[b], padded[b, t:t + size, l:l + size])]
        assert len(matches) == 1, f"crop {b} is no window of the zero-padded image"
        offsets.append(matches[0])
    return offsets


def test_random_crop_takes_every_window_of_the_zero_padded_image():
    image = (np.arange(4 * 4 * 3).reshape(4, 4, 3) + 1).astype(np.uint8)   # no zeros inside
    images = np.repeat(image[None], 300, axis=0)
    out = random_crop(images, np.random.default_rng(0), padding=1)
    assert out.shape == images.shape and out.dtype == np.uint8
    offsets = crop_offsets(out, images, padding=1)
    assert set(offsets) == {(t, l) for t in range(3) for l in range(3)}
    centred = offsets.index((1, 1))
    np.testing.assert_array_equal(out[centred], image)
    corner = offsets.index((0, 0))       # the padding shows as a zero row and column
    assert not out[corner, 0].any() and not out[corner, :, 0].any()
    np.testing.assert_array_equal(out[corner, 1:, 1:], image[:3, :3])


def test_random_crop_size_and_seed():
    images = np.random.default_rng(1).integers(0, 256, (50, 6, 6, 3), dtype=np.uint8)
    out = random_crop(images, np.random.default_rng(2), padding=0, size=4)
    assert out.shape == (50, 4, 4, 3)
    assert len(set(crop_offsets(out, images, padding=0))) == 9
    np.testing.assert_array_equal(out, random_crop(images, np.random.default_rng(2), 0, 4))
    with pytest.raises(ValueError, match="larger than the padded image"):
        random_crop(images, np.random.default_rng(0), padding=1, size=9)


def test_random_flip_mirrors_about_half():
    images = np.random.default_rng(3).integers(0, 256, (400, 5, 7, 3), dtype=np.uint8)
    before = images.copy()
    out = random_flip(images, np.random.default_rng(4))
    np.testing.assert_array_equal(images, before)       # input untouched
    flipped = [np.array_equal(o, i[:, ::-1]) for o, i in zip(out, images)]
    kept = [np.array_equal(o, i) for o, i in zip(out, images)]
    assert all(f != k for f, k in zip(flipped, kept))   # each image one or the other
    assert 150 < sum(flipped) < 250
    np.testing.assert_array_equal(random_flip(images, np.random.default_rng(0), p=1.0),
                                  images[:, :, ::-1])
    np.testing.assert_array_equal(random_flip(images, np.random.default_rng(0), p=0.0), images)


def test_cifar_augment_keeps_shape_and_type():
    images = np.random.default_rng(5).integers(0, 256, (8, 32, 32, 3), dtype=np.uint8)
    out = cifar_augment(images, np.random.default_rng(6))
    assert out.shape == images.shape and out.dtype == np.uint8
    assert not np.array_equal(out, images)


def test_normalize_numbers_and_layout():
    images = np.zeros((2, 1, 2, 3), np.uint8)
    images[0, 0, 0] = (255, 0, 51)
    images[1, 0, 1] = (0, 255, 102)
    x = normalize(images, mean=(0.5, 0.0, 0.2), std=(0.25, 0.5, 0.1))
    assert x.dtype == np.float32 and x.shape == (2, 3, 1, 2)
    np.testing.assert_allclose(x[0, :, 0, 0], [2.0, 0.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(x[0, :, 0, 1], [-2.0, 0.0, -2.0], atol=1e-6)
    np.testing.assert_allclose(x[1, :, 0, 1], [-2.0, 2.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(normalize(images)[0, :, 0, 0], [1.0, 0.0, 0.2], atol=1e-7)
    assert len(CIFAR10_MEAN) == len(CIFAR10_STD) == 3


@pytest.fixture(scope="module")
def torchvision_transforms():
    from reference import import_torchvision
    return import_torchvision().transforms


@pytest.mark.parametrize("size", [(500, 375), (300, 451), (256, 256), (481, 256),
                                  (100, 80), (224, 300), (1023, 257)])
def test_imagenet_preprocess_equals_torchvision(torchvision_transforms, size):
    T = torchvision_transforms
    rng = np.random.default_rng(sum(size))
    # Smooth content plus noise: both the resampling and the exact pixels matter.
    yy, xx = np.mgrid[0:size[1], 0:size[0]]
    smooth = np.stack([xx * 255 / size[0], yy * 255 / size[1], (xx + yy) % 256], axis=-1)
    pixels = np.clip(smooth + rng.normal(0, 20, smooth.shape), 0, 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    reference = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                           T.Normalize(IMAGENET_MEAN, IMAGENET_STD)])(image)
    ours = imagenet_preprocess(image)
    assert ours.dtype == np.float32 and ours.shape == (3, 224, 224)
    np.testing.assert_allclose(ours, reference.numpy(), rtol=0, atol=1e-6)


def test_imagenet_preprocess_equals_the_weights_transform():
    from reference import import_torchvision
    weights = import_torchvision().models.ResNet50_Weights.IMAGENET1K_V1
    pixels = np.random.default_rng(7).integers(0, 256, (333, 517, 3), dtype=np.uint8)
    image = Image.fromarray(pixels)
    np.testing.assert_allclose(imagenet_preprocess(image), weights.transforms()(image).numpy(),
                               rtol=0, atol=1e-6)


def test_imagenet_preprocess_converts_grey_to_rgb():
    image = Image.fromarray(np.full((300, 300), 100, np.uint8))
    x = imagenet_preprocess(image)
    assert x.shape == (3, 224, 224)
    np.testing.assert_allclose(x[:, 0, 0], (100 / 255 - np.array(IMAGENET_MEAN)) /
                               np.array(IMAGENET_STD), atol=1e-6)


def test_load_image(tmp_path):
    Image.fromarray(np.full((3, 4), 7, np.uint8)).save(tmp_path / "grey.png")
    image = load_image(tmp_path / "grey.png")
    assert image.mode == "RGB" and image.size == (4, 3)
    assert np.asarray(image).tolist()[0][0] == [7, 7, 7]

    (tmp_path / "data.csv").write_text("1,2,3\n")
    with pytest.raises(ValueError, match="data.csv: not a readable image"):
        load_image(tmp_path / "data.csv")
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "cut.png")
    raw = (tmp_path / "cut.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(raw[:len(raw) // 2])
    with pytest.raises(ValueError, match="cut.png"):
        load_image(tmp_path / "cut.png")
    with pytest.raises(FileNotFoundError):
        load_image(tmp_path / "absent.png")


def test_16_bit_and_float_images_are_scaled_not_clipped(tmp_path):
    wide = np.array([[0, 257, 32896], [65535, 1000, 51400]], np.uint16)   # 0, 1, 128, 255...
    Image.fromarray(wide).save(tmp_path / "wide.png")
    assert Image.open(tmp_path / "wide.png").mode == "I;16"
    expected = np.rint(wide / 257.0).astype(np.uint8)
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "wide.png")),
                                  np.repeat(expected[..., None], 3, axis=-1))

    unit = np.array([[0.0, 0.5, 1.0], [0.25, 0.75, 1 / 255]], np.float32)
    Image.fromarray(unit).save(tmp_path / "unit.tiff")
    assert Image.open(tmp_path / "unit.tiff").mode == "F"
    np.testing.assert_array_equal(np.asarray(load_image(tmp_path / "unit.tiff"))[..., 0],
                                  np.rint(unit.astype(np.float64) * 255).astype(np.uint8))
    Image.fromarray(unit * 300).save(tmp_path / "range.tiff")
    with pytest.raises(ValueError, match=r"range.tiff: a float image must have its pixels in "
                                         r"\[0, 1\], got \[0, 300\]"):
        load_image(tmp_path / "range.tiff")

    # A folder dataset of 16-bit files equals one of the same pictures in 8 bits.
    for name, picture in (("a/wide.png", wide), ("b/narrow.png", expected)):
        (tmp_path / "folder" / name).parent.mkdir(parents=True)
        Image.fromarray(picture).save(tmp_path / "folder" / name)
    images = load_image_folder(tmp_path / "folder", image_size=3).images
    np.testing.assert_array_equal(images[0], images[1])


def test_a_decompression_bomb_is_one_clear_error(tmp_path, monkeypatch):
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 64 * 64 // 4)   # 4x over the limit
    with pytest.raises(ValueError, match="bomb.png: the image is too large to open safely"):
        load_image(tmp_path / "bomb.png")


def test_resize_images():
    images = np.random.default_rng(8).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    assert resize_images(images, 8) is images
    out = resize_images(images, 16)
    assert out.shape == (3, 16, 16, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out[1], np.asarray(Image.fromarray(images[1]).resize(
        (16, 16), Image.BILINEAR)))


def test_imagenet_classes():
    from reference import import_torchvision
    names = imagenet_classes()
    categories = import_torchvision().models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"]
    assert names == categories and len(names) == 1000
    assert names[0] == "tench" and names[999] == "toilet tissue"
    names.clear()                                    # the caller gets its own copy
    assert len(imagenet_classes()) == 1000


# --------------------------------------------------------------------------- #
# Loader
# --------------------------------------------------------------------------- #
def indexed_dataset(n=50, size=4):
    """Image i is filled with the value i, and its label is i."""
    images = np.broadcast_to(np.arange(n, dtype=np.uint8)[:, None, None, None],
                             (n, size, size, 3)).copy()
    return Dataset(images, np.arange(n, dtype=np.int64), [str(i) for i in range(n)], "indexed")


def run_epochs(loader, epochs):
    return [[(x.copy(), y.copy()) for x, y in loader] for _ in range(epochs)]


def assert_same_batches(a, b):
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)


@pytest.fixture(autouse=True)
def fail_instead_of_hanging():
    """A prefetch bug can block a test forever: end the run, with tracebacks, instead."""
    faulthandler.dump_traceback_later(120, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "resnet_np-prefetch"]


@pytest.mark.parametrize("prefetch", [True, False])
def test_loader_batches_cover_the_epoch(prefetch):
    loader = DataLoader(indexed_dataset(50), 16, shuffle=True, seed=0, prefetch=prefetch)
    assert len(loader) == 4
    batches = list(loader)
    assert [len(y) for _, y in batches] == [16, 16, 16, 2]
    for x, y in batches:
        assert x.dtype == np.float32 and x.shape == (len(y), 3, 4, 4) and y.dtype == np.int64
        np.testing.assert_allclose(x[:, :, 0, 0] * 255, np.repeat(y[:, None], 3, 1), atol=1e-4)
    seen = np.concatenate([y for _, y in batches])
    assert sorted(seen.tolist()) == list(range(50))
    assert seen.tolist() != list(range(50))             # shuffled


def test_loader_drop_last_and_order():
    loader = DataLoader(indexed_dataset(50), 16, drop_last=True)
    assert len(loader) == 3
    assert np.concatenate([y for _, y in loader]).tolist() == list(range(48))


def test_loader_normalizes():
    loader = DataLoader(indexed_dataset(10), 10, mean=CIFAR10_MEAN, std=CIFAR10_STD)
    x, y = next(iter(loader))
    expected = (y[:, None] / 255 - np.array(CIFAR10_MEAN)) / np.array(CIFAR10_STD)
    np.testing.assert_allclose(x[:, :, 2, 3], expected, atol=1e-5)


def test_loader_is_deterministic_and_reshuffles_every_epoch():
    def make(seed):
        return DataLoader(indexed_dataset(40, size=8), 8, shuffle=True, seed=seed,
                          augment=cifar_augment)
    a, b = run_epochs(make(1), 2), run_epochs(make(1), 2)
    for epoch_a, epoch_b in zip(a, b):
        assert_same_batches(epoch_a, epoch_b)
    order = [np.concatenate([y for _, y in epoch]).tolist() for epoch in a]
    assert order[0] != order[1]
    other = run_epochs(make(2), 1)[0]
    assert np.concatenate([y for _, y in other]).tolist() != order[0]


def test_loader_prefetch_does_not_change_batches():
    def make(prefetch):
        return DataLoader(indexed_dataset(40, size=8), 8, shuffle=True, seed=3,
                          augment=cifar_augment, prefetch=prefetch)
    for with_thread, without in zip(run_epochs(make(True), 2), run_epochs(make(False), 2)):
        assert_same_batches(with_thread, without)


@pytest.mark.parametrize("stop_after", [0, 2, 5])
def test_loader_resume_gives_the_same_batches(stop_after):
    def make():
        return DataLoader(indexed_dataset(40, size=8), 8, shuffle=True, seed=4,
                          augment=cifar_augment)
    full = run_epochs(make(), 3)
    flat = [batch for epoch in full for batch in epoch]

    # Run epoch 0, then stop inside epoch 1 after `stop_after` batches (5 = all of them).
    first = make()
    seen = run_epochs(first, 1)[0]
    state = first.state_dict()
    for i, (x, y) in enumerate(first):
        if i == stop_after:
            break
        seen.append((x.copy(), y.copy()))
        state = first.state_dict()          # a checkpoint after every step

    resumed = make()
    resumed.load_state_dict(state)
    rest = []
    while len(seen) + len(rest) < len(flat):
        epoch = run_epochs(resumed, 1)[0]
        assert epoch, "a pass over the resumed loader yielded no batch"
        rest += epoch
    assert_same_batches(seen + rest, flat)


def test_loader_state_after_early_break():
    loader = DataLoader(indexed_dataset(40), 8, shuffle=True, seed=0)
    assert loader.state_dict() == {"seed": 0, "epoch": 0, "batch": 0}
    for i, _ in enumerate(loader):
        if i == 1:
            assert loader.state_dict()["batch"] == 2
            break
    assert loader.state_dict() == {"seed": 0, "epoch": 1, "batch": 0}
    assert len(list(loader)) == 5 and loader.epoch == 2


def test_loader_prefetch_thread_stops_on_early_break():
    def slow(images, rng):
        time.sleep(0.02)
        return images
    loader = DataLoader(indexed_dataset(40), 4, augment=slow)
    for i, _ in enumerate(loader):
        assert len(prefetch_threads()) == 1
        if i == 2:
            break
    assert prefetch_threads() == []
    list(loader)
    assert prefetch_threads() == []


def test_loader_reraises_worker_errors():
    def failing(images, rng):
        if images[0, 0, 0, 0] >= 8:
            raise RuntimeError("augment failed")
        return images
    for prefetch in (True, False):
        loader = DataLoader(indexed_dataset(40), 4, augment=failing, prefetch=prefetch)
        got = []
        with pytest.raises(RuntimeError, match="augment failed"):
            for _, y in loader:
                got.append(y)
        assert len(got) == 2
        assert prefetch_threads() == []


def test_loader_argument_errors():
    dataset = indexed_dataset(10)
    for bad in (0, -3, 2.5, None):
        with pytest.raises(ValueError, match="positive integer"):
            DataLoader(dataset, bad)
    with pytest.raises(ValueError, match="larger than the dataset"):
        DataLoader(dataset, 11)
    with pytest.raises(TypeError, match="augment must be callable"):
        DataLoader(dataset, 2, augment="flip")
    with pytest.raises(KeyError, match="batch"):
        DataLoader(dataset, 2).load_state_dict({"seed": 0, "epoch": 1})
