"""Data sets: bundled real data found in installed packages, and readers for users' own files."""

from .datasets import (
    FASHION_MNIST_CLASSES,
    ImageDataset,
    digits,
    fashion_mnist,
    fashion_mnist_dir,
    foolbox_samples,
    idx_dataset,
    image_folder,
    load_dataset,
    mnist5k,
    package_data_dir,
    stratified_split,
)
from .errors import DataError, DataNotFoundError
from .idx import read_idx, write_idx
from .spec import parse_data_spec

__all__ = [
    "FASHION_MNIST_CLASSES",
    "DataError",
    "DataNotFoundError",
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
    "parse_data_spec",
    "read_idx",
    "stratified_split",
    "write_idx",
]
