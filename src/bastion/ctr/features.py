"""What a CTR model is told about its inputs, and the batch layout every part of ``bastion.ctr`` shares.

A batch is a ``dict[str, torch.Tensor]``:

- ``"ids"``: int64 ``[B, F]``, one column per categorical field, *local* ids per field in
  ``[0, field_sizes[f])`` where 0 is the null/padding id (hash buckets or vocabulary indices);
  the model adds the field offsets into its one fused embedding table itself.
- ``"scene"``: int64 ``[B]`` in ``[0, num_scenes)``.
- ``"label"``: float32 ``[B]`` in {0, 1} (absent at inference).
- one float32 ``[B, dim]`` entry per content vector named in :attr:`FeatureSpec.vector_dims`
  (text and image embeddings); each is projected to the embedding width and appended as a field.
- optional extras the trainer and metrics carry along untouched: ``"user"`` (int64 ``[B]``, raw user
  key for gAUC), ``"cold_item"`` / ``"cold_user"`` (bool ``[B]``), ``"p_true"`` (float32 ``[B]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["FeatureSpec", "check_batch"]


@dataclass(frozen=True)
class FeatureSpec:
    """Field names and sizes of the categorical inputs, the number of scenes and the content vectors.

    >>> spec = FeatureSpec(["user_id", "item_id"], [101, 51], num_scenes=5, vector_dims={"title": 384})
    >>> spec.num_fields, spec.total_rows
    (2, 152)
    """

    field_names: Sequence[str]
    field_sizes: Sequence[int]
    num_scenes: int = 1
    vector_dims: Mapping[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "field_names", tuple(str(n) for n in self.field_names))
        object.__setattr__(self, "field_sizes", tuple(int(s) for s in self.field_sizes))
        object.__setattr__(self, "vector_dims", dict(self.vector_dims))
        if len(self.field_names) != len(self.field_sizes):
            raise ValueError(
                f"field_names and field_sizes must have the same length, got {len(self.field_names)} "
                f"and {len(self.field_sizes)}"
            )
        if not self.field_names:
            raise ValueError("field_names must name at least one categorical field")
        if len(set(self.field_names)) != len(self.field_names):
            raise ValueError(f"field_names must be unique, got {list(self.field_names)}")
        for name, size in zip(self.field_names, self.field_sizes, strict=True):
            if size < 2:
                raise ValueError(f"field_sizes[{name!r}] must be >= 2 (row 0 is the null id), got {size}")
        if int(self.num_scenes) < 1:
            raise ValueError(f"num_scenes must be >= 1, got {self.num_scenes}")
        object.__setattr__(self, "num_scenes", int(self.num_scenes))
        for name, dim in self.vector_dims.items():
            if name in ("ids", "scene", "label") or int(dim) < 1:
                raise ValueError(f"vector_dims[{name!r}] must be a positive width under a free key, got {dim}")

    @property
    def num_fields(self) -> int:
        return len(self.field_names)

    @property
    def total_rows(self) -> int:
        """Rows of the fused embedding table (sum of the field sizes)."""
        return sum(self.field_sizes)

    def offsets(self) -> torch.Tensor:
        """int64 ``[F]`` start row of each field in the fused table."""
        sizes = torch.tensor(self.field_sizes, dtype=torch.int64)
        return torch.cumsum(sizes, 0) - sizes


def check_batch(batch: Mapping[str, torch.Tensor], spec: FeatureSpec, *, need_label: bool = False) -> int:
    """Validate ``batch`` against ``spec``; return the batch size. Errors name the key and what was expected."""
    if not isinstance(batch, Mapping):
        raise TypeError(f"batch must be a mapping of tensors, got {type(batch).__name__}")
    if "ids" not in batch:
        raise ValueError("batch is missing 'ids' (int64 [B, F])")
    ids = batch["ids"]
    if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int64 or ids.dim() != 2:
        raise TypeError(f"batch['ids'] must be an int64 tensor [B, F], got {getattr(ids, 'dtype', type(ids))}")
    if ids.shape[1] != spec.num_fields:
        raise ValueError(f"batch['ids'] must have {spec.num_fields} columns (one per field), got {ids.shape[1]}")
    n = ids.shape[0]
    if n == 0:
        raise ValueError("batch is empty (0 rows)")
    if "scene" in batch:
        scene = batch["scene"]
        if scene.shape != (n,):
            raise ValueError(f"batch['scene'] must have shape ({n},), got {tuple(scene.shape)}")
        if scene.numel() and (int(scene.min()) < 0 or int(scene.max()) >= spec.num_scenes):
            raise ValueError(
                f"batch['scene'] must lie in [0, {spec.num_scenes}), got {int(scene.min())}..{int(scene.max())}"
            )
    elif spec.num_scenes > 1:
        raise ValueError(f"batch is missing 'scene' (int64 [B]) for a {spec.num_scenes}-scene spec")
    for name, dim in spec.vector_dims.items():
        if name not in batch:
            raise ValueError(f"batch is missing the content vector {name!r} (float32 [B, {dim}])")
        v = batch[name]
        if v.shape != (n, dim):
            raise ValueError(f"batch[{name!r}] must have shape ({n}, {dim}), got {tuple(v.shape)}")
    if need_label:
        if "label" not in batch:
            raise ValueError("batch is missing 'label' (float32 [B] in {0, 1})")
        if batch["label"].shape != (n,):
            raise ValueError(f"batch['label'] must have shape ({n},), got {tuple(batch['label'].shape)}")
    return n
