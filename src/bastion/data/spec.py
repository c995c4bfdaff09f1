"""Parse a data set named on the command line into an :class:`ImageDataset`.

Forms::

    NAME:SPLIT[START:STOP]      a registered data set, e.g. mnist5k:train[:1000]
    folder:PATH                 an image folder (one sub-folder per class)
    idx:IMAGES,LABELS           a pair of IDX files (gzipped or not)
"""

from __future__ import annotations

import re

from ..core.registry import DATASETS
from .datasets import ImageDataset, idx_dataset, image_folder, load_dataset

__all__ = ["parse_data_spec"]

_NAMED = re.compile(r"^(?P<name>[\w.-]+):(?P<split>\w+)(?:\[(?P<start>-?\d*):(?P<stop>-?\d*)\])?$")


def parse_data_spec(spec: str) -> ImageDataset:
    """Load the data set that ``spec`` names (see the module docstring).

    >>> len(parse_data_spec("digits:test[10:30]"))
    20
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"data spec must be a non-empty string, got {spec!r}")
    if spec.startswith("folder:"):
        return image_folder(spec[len("folder:") :])
    if spec.startswith("idx:"):
        parts = spec[len("idx:") :].split(",")
        if len(parts) != 2:
            raise ValueError(f"idx data spec must be idx:IMAGES,LABELS, got {spec!r}")
        return idx_dataset(parts[0], parts[1])
    m = _NAMED.match(spec)
    if m is None:
        raise ValueError(
            f"cannot parse data spec {spec!r}; use NAME:SPLIT[START:STOP] (names: {', '.join(DATASETS.names())}), "
            "folder:PATH or idx:IMAGES,LABELS"
        )
    data = load_dataset(m["name"], m["split"])
    if m["start"] is None and m["stop"] is None:
        return data
    start = int(m["start"]) if m["start"] else None
    stop = int(m["stop"]) if m["stop"] else None
    rows = range(len(data))[start:stop]
    if not len(rows):
        raise ValueError(f"data spec {spec!r} selects no rows of {len(data)}")
    return data.subset(list(rows), name=spec)
