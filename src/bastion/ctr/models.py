"""CTR models over one fused embedding table: single-scenario and multi-scenario (spec antm2c.md section 3).

Every model takes the batch dict of :mod:`bastion.ctr.features` and returns float32 logits ``[B]``.
Categorical fields share ONE ``nn.Embedding`` (:class:`FusedEmbedding`, ``sparse=True`` by default for
SparseAdam, rows initialised N(0, 0.01) as the spec asks); each content vector (text, image) is projected
to the embedding width and appended as a field (``fusion="fields"``), or mixed into the item field's
embedding by a sigmoid gate (``"gate"``) or by attention over ``[e_id, t, v]`` (``"attention"``).
Models with an LR part keep its per-id weights as one extra column of the same table (one lookup and one
sparse gradient per step); :func:`split_parameters` hands the tables to SparseAdam and the rest to Adam.

Single-scenario, as written in the papers and the spec: LR, FM (½Σ_k[(Σ_f e_fk)² − Σ_f e_fk²]), DNN,
Wide&Deep, DeepFM (LR + FM + MLP), DCN (x_{l+1} = x0 (x_lᵀ w_l) + b_l + x_l, parallel with the MLP),
DCNv2 (x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l), AutoInt (multi-head self-attention over fields with a
residual projection and ReLU, plus the MLP: AutoInt+), xDeepFM (LR + CIN
X^k_h = Σ_ij W^{k,h}_ij (X^{k−1}_i ∘ X^0_j), split-half, sum pooling + MLP).

Multi-scenario (``batch["scene"]``): :class:`PerScene` (one independent model per scene), :class:`Pooled`
(scene as an extra categorical field), :class:`SharedBottom`, :class:`MMoE` (gate_s = softmax(W_s x0)),
:class:`PLE` (shared + scene-specific experts per level) and :class:`STAR` (W_s = W ⊙ W_s^spec,
b_s = b + b_s^spec, partitioned normalisation with per-scene batch statistics in training and per-scene
running statistics at inference, plus an auxiliary scene network's logit). Rows are grouped by scene
(one stable argsort) and only a scene's rows pass through its tower, gate, specific experts or specific
STAR weights, so a scene absent from a batch gets no gradient there (``None``); per-scene statistics
never mix scenes. Reconstructions [R]: PLE's shared gate mixes the shared experts with the row's own
scene's specific experts (the multi-task PLE mixes every task's experts, which would push each row
through every scene's experts); STAR's partitioned normalisation sits on the input x0 as in the STAR
paper's figure, its auxiliary net reads [scene embedding, x0].

Defaults follow the spec [R]: d=16, MLP 400-400-400 with ReLU and no dropout, MMoE 4 experts of 256 and
towers of 64, PLE 2 shared + 1 specific expert per scene and 2 levels, STAR 256-128 with an aux net of 64.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..core.checks import check_choice, check_float, check_int
from .dense import MLP
from .features import FeatureSpec, check_batch

__all__ = [
    "CIN",
    "DCN",
    "DNN",
    "FM",
    "LR",
    "MODEL_NAMES",
    "PLE",
    "STAR",
    "AutoInt",
    "CTRModel",
    "ContentFusion",
    "CrossNetwork",
    "DCNv2",
    "DeepFM",
    "FusedEmbedding",
    "LinearPart",
    "MMoE",
    "MultiHeadFieldAttention",
    "PartitionedNorm",
    "PerScene",
    "Pooled",
    "SharedBottom",
    "WideDeep",
    "XDeepFM",
    "build_model",
    "fm_interaction",
    "scene_groups",
    "split_parameters",
]

Batch = Mapping[str, torch.Tensor]

SINGLE_SCENARIO = ("lr", "fm", "dnn", "wdl", "deepfm", "dcn", "dcnv2", "autoint", "xdeepfm")
MULTI_SCENARIO = ("per_scene", "pooled", "shared_bottom", "mmoe", "ple", "star")
MODEL_NAMES = SINGLE_SCENARIO + MULTI_SCENARIO
FUSIONS = ("fields", "gate", "attention")


# ----------------------------------------------------------------------------------------------------------
# helpers


def _check_layers(layers: Sequence[int] | None, name: str, *, allow_empty: bool = True) -> tuple[int, ...]:
    if isinstance(layers, int | str) or layers is None:
        raise TypeError(f"{name} must be a sequence of layer widths, got {layers!r}")
    out = tuple(check_int(w, f"{name}[{i}]", minimum=1) for i, w in enumerate(layers))
    if not out and not allow_empty:
        raise ValueError(f"{name} must name at least one layer width, got ()")
    return out


def _mlp(in_dim: int, hidden: Sequence[int], dropout: float = 0.0, out_dim: int | None = None) -> MLP:
    """Linear-ReLU(-Dropout) stack over ``hidden``; a final plain Linear to ``out_dim`` if given.

    An :class:`~bastion.ctr.dense.MLP`: float32 CPU layers run through oneDNN (see :mod:`bastion.ctr.dense`).
    """
    layers: list[nn.Module] = []
    width = in_dim
    for h in hidden:
        layers += [nn.Linear(width, h), nn.ReLU()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        width = h
    if out_dim is not None:
        layers.append(nn.Linear(width, out_dim))
    return MLP(*layers)


def split_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """``(sparse, dense)`` parameters: weights of ``nn.Embedding(sparse=True)`` tables (for SparseAdam) and the rest.

    >>> m = build_model("deepfm", FeatureSpec(["a", "b"], [5, 7]), dim=4, mlp=(8,))
    >>> sparse, dense = split_parameters(m)
    >>> [tuple(p.shape) for p in sparse]
    [(12, 5)]
    """
    sparse_ids = {
        id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding) and m.sparse and m.weight.requires_grad
    }
    sparse, dense = [], []
    for p in model.parameters():
        (sparse if id(p) in sparse_ids else dense).append(p)
    return sparse, dense


def scene_groups(scene: torch.Tensor, num_scenes: int) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
    """Rows grouped by scene: ``(order, [(scene, start, stop), ...])`` for the scenes present.

    ``order`` is a stable argsort of ``scene``; ``order[start:stop]`` are the rows of that scene.

    >>> order, groups = scene_groups(torch.tensor([2, 0, 2, 0]), 3)
    >>> order.tolist(), groups
    ([1, 3, 0, 2], [(0, 0, 2), (2, 2, 4)])
    """
    counts = torch.bincount(scene, minlength=num_scenes).tolist()
    order = torch.argsort(scene, stable=True)
    groups, start = [], 0
    for s, c in enumerate(counts):
        if c:
            groups.append((s, start, start + c))
            start += c
    return order, groups


def _unsort(order: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Inverse of ``values = x[order]`` along dim 0 (differentiable)."""
    return values.new_zeros(values.shape).index_copy(0, order, values)


def fm_interaction(emb: torch.Tensor) -> torch.Tensor:
    """FM second-order term ½Σ_k[(Σ_f e_fk)² − Σ_f e_fk²] = Σ_{i<j}⟨e_i, e_j⟩ of ``emb`` [B, F, d] -> [B].

    >>> e = torch.tensor([[[1.0, 2.0], [3.0, 4.0], [0.5, -1.0]]])
    >>> fm_interaction(e).item()  # 11 + (0.5 - 2) + (1.5 - 4)
    7.0
    """
    s = emb.sum(1)
    return 0.5 * (s.square().sum(1) - emb.square().sum((1, 2)))


# ----------------------------------------------------------------------------------------------------------
# embeddings and content fusion


class FusedEmbedding(nn.Module):
    """ONE ``nn.Embedding`` over ``spec.total_rows`` rows with per-field offsets: ids [B, F] -> [B, F, dim].

    ``dim=1`` gives the per-id weights of the linear (LR) part.

    >>> emb = FusedEmbedding(FeatureSpec(["a", "b"], [3, 4]), dim=2)
    >>> emb.table.weight.shape, emb(torch.tensor([[0, 3], [2, 1]])).shape
    (torch.Size([7, 2]), torch.Size([2, 2, 2]))
    """

    def __init__(self, spec: FeatureSpec, dim: int, sparse: bool = True, init_std: float = 0.01) -> None:
        super().__init__()
        if not isinstance(spec, FeatureSpec):
            raise TypeError(f"spec must be a FeatureSpec, got {type(spec).__name__}")
        self.dim = check_int(dim, "dim", minimum=1)
        init_std = check_float(init_std, "init_std", minimum=0, min_inclusive=False)
        self.table = nn.Embedding(spec.total_rows, self.dim, sparse=bool(sparse))
        nn.init.normal_(self.table.weight, 0.0, init_std)
        self.register_buffer("offsets", spec.offsets(), persistent=False)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Global row of each local id (``ids + offsets``)."""
        return ids + self.offsets

    def lookup(self, rows: torch.Tensor) -> torch.Tensor:
        """Embeddings of global rows (see :meth:`rows`)."""
        return self.table(rows)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.table(ids + self.offsets)


class LinearPart(nn.Module):
    """The LR part: Σ_f w[id_f] + b (+ a linear map of the raw content vectors) -> [B].

    With ``own_weights`` the per-id weights live in a width-1 :class:`FusedEmbedding`; without, the caller
    passes Σ_f w[id_f] (the models with an embedding keep w as one extra column of their fused table: one
    lookup and one sparse gradient instead of two).
    """

    def __init__(
        self, spec: FeatureSpec, sparse: bool = True, init_std: float = 0.01, own_weights: bool = True
    ) -> None:
        super().__init__()
        self.weights = FusedEmbedding(spec, 1, sparse=sparse, init_std=init_std) if own_weights else None
        self.bias = nn.Parameter(torch.zeros(()))
        self.vector_names = tuple(spec.vector_dims)
        width = sum(spec.vector_dims.values())
        self.content = nn.Linear(width, 1, bias=False) if width else None

    def forward(self, batch: Batch, id_sum: torch.Tensor | None = None) -> torch.Tensor:
        if id_sum is None:
            if self.weights is None:
                raise ValueError("id_sum (Σ_f w[id_f], [B]) is required when the LR part has no weights of its own")
            id_sum = self.weights(batch["ids"]).sum((1, 2))
        out = id_sum + self.bias
        if self.content is not None:
            vec = torch.cat([batch[n] for n in self.vector_names], 1)
            out = out + self.content(vec).squeeze(1)
        return out


class ContentFusion(nn.Module):
    """Project each content vector to ``dim`` and fuse it with the field embeddings [B, F, d].

    ``"fields"``: append one field per vector -> [B, F + m, d]. ``"gate"``: the item field becomes
    g ⊙ e_id + (1 − g) ⊙ c with g = σ(W [e_id; c] + b) and c the mean projected vector. ``"attention"``:
    the item field becomes Σ_i α_i t_i over t = [e_id, p_1, ..., p_m], α = softmax(qᵀ tanh(W t_i + b)).
    """

    def __init__(self, spec: FeatureSpec, dim: int, fusion: str = "fields", item_field: str | None = None) -> None:
        super().__init__()
        self.fusion = check_choice(fusion, "fusion", FUSIONS)
        self.names = tuple(spec.vector_dims)
        self.proj = nn.ModuleList([nn.Linear(spec.vector_dims[n], dim) for n in self.names])
        self.item_index = -1
        if fusion != "fields":
            if item_field is None:
                item_field = "item_id"
            if item_field not in spec.field_names:
                raise ValueError(
                    f"item_field must name the categorical field the content is fused into for fusion={fusion!r}; "
                    f"{item_field!r} is not in {list(spec.field_names)}"
                )
            self.item_index = spec.field_names.index(item_field)
        if fusion == "gate":
            self.gate = nn.Linear(2 * dim, dim)
        elif fusion == "attention":
            self.att = nn.Linear(dim, dim)
            self.query = nn.Linear(dim, 1, bias=False)

    @property
    def extra_fields(self) -> int:
        return len(self.names) if self.fusion == "fields" else 0

    def forward(self, emb: torch.Tensor, batch: Batch) -> torch.Tensor:
        vecs = [p(batch[n]) for p, n in zip(self.proj, self.names, strict=True)]
        if self.fusion == "fields":
            return torch.cat([emb, torch.stack(vecs, 1)], 1)
        j = self.item_index
        e_id = emb[:, j]
        if self.fusion == "gate":
            c = vecs[0] if len(vecs) == 1 else torch.stack(vecs, 0).mean(0)
            g = torch.sigmoid(self.gate(torch.cat([e_id, c], 1)))
            fused = g * e_id + (1 - g) * c
        else:
            tokens = torch.stack([e_id, *vecs], 1)  # [B, 1 + m, d]
            alpha = torch.softmax(self.query(torch.tanh(self.att(tokens))), dim=1)  # [B, 1 + m, 1]
            fused = (alpha * tokens).sum(1)
        return torch.cat([emb[:, :j], fused.unsqueeze(1), emb[:, j + 1 :]], 1)


# ----------------------------------------------------------------------------------------------------------
# base classes


class CTRModel(nn.Module):
    """Base: input validation and the sparse/dense parameter split. Subclasses implement :meth:`logits`."""

    def __init__(self, spec: FeatureSpec) -> None:
        super().__init__()
        if not isinstance(spec, FeatureSpec):
            raise TypeError(f"spec must be a FeatureSpec, got {type(spec).__name__}")
        self.spec = spec
        self.validate_inputs = True
        self.register_buffer("_field_sizes", torch.tensor(spec.field_sizes, dtype=torch.int64), persistent=False)

    def check_inputs(self, batch: Batch) -> int:
        """:func:`check_batch` plus id ranges per field, the scene dtype and finite content vectors."""
        n = check_batch(batch, self.spec)
        ids = batch["ids"]
        bad = (ids < 0) | (ids >= self._field_sizes)
        if bool(bad.any()):
            f = int(bad.any(0).nonzero()[0])
            col = ids[:, f]
            raise ValueError(
                f"batch['ids'] column {f} ({self.spec.field_names[f]!r}) must lie in [0, {self.spec.field_sizes[f]}), "
                f"got {int(col.min())}..{int(col.max())}"
            )
        if "scene" in batch and (batch["scene"].is_floating_point() or batch["scene"].dtype == torch.bool):
            raise TypeError(f"batch['scene'] must be an integer tensor, got {batch['scene'].dtype}")
        for name in self.spec.vector_dims:
            v = batch[name]
            if not v.is_floating_point():
                raise TypeError(f"batch[{name!r}] must be a float tensor, got {v.dtype}")
            if not bool(torch.isfinite(v).all()):
                raise ValueError(f"batch[{name!r}] contains {int((~torch.isfinite(v)).sum())} NaN or infinite values")
        return n

    def forward(self, batch: Batch) -> torch.Tensor:
        if self.validate_inputs:
            self.check_inputs(batch)
        return self.logits(batch)

    def logits(self, batch: Batch) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def sparse_parameters(self) -> list[nn.Parameter]:
        return split_parameters(self)[0]

    def dense_parameters(self) -> list[nn.Parameter]:
        return split_parameters(self)[1]


class _EmbeddingModel(CTRModel):
    """A model with a fused embedding table, content fusion and optionally the LR part."""

    def __init__(
        self,
        spec: FeatureSpec,
        *,
        dim: int = 16,
        fusion: str = "fields",
        item_field: str | None = None,
        sparse: bool = True,
        init_std: float = 0.01,
        linear: bool = False,
        embedding: bool = True,
    ) -> None:
        super().__init__(spec)
        self.dim = check_int(dim, "dim", minimum=1)
        check_float(init_std, "init_std", minimum=0, min_inclusive=False)
        check_choice(fusion, "fusion", FUSIONS)
        # the LR weights ride along as one extra column of the fused table (when there is one)
        self.has_linear = bool(linear)
        width = self.dim + (1 if linear else 0)
        self.embedding = FusedEmbedding(spec, width, sparse=sparse, init_std=init_std) if embedding else None
        self.content = ContentFusion(spec, self.dim, fusion, item_field) if spec.vector_dims and embedding else None
        self.linear = LinearPart(spec, sparse, init_std, own_weights=not embedding) if linear else None
        self.num_inputs = spec.num_fields + (self.content.extra_fields if self.content is not None else 0)
        """Fields after content fusion (the N of the [B, N, d] embedding stack)."""

    def embed_linear(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Field-embedding stack [B, N, d] after content fusion, and the LR logit [B] (``None`` without LR)."""
        out = self.embedding(batch["ids"])
        lin = None
        if self.has_linear:
            lin = self.linear(batch, out[..., self.dim].sum(1))
            out = out[..., : self.dim]
        if self.content is not None:
            out = self.content(out, batch)
        return out, lin

    def embed(self, batch: Batch) -> torch.Tensor:
        """Field-embedding stack [B, N, d] after content fusion."""
        return self.embed_linear(batch)[0]


# ----------------------------------------------------------------------------------------------------------
# single-scenario models


class LR(_EmbeddingModel):
    """Logistic regression: Σ_f w[id_f] + b (+ linear content term)."""

    def __init__(
        self,
        spec: FeatureSpec,
        *,
        dim: int = 16,
        fusion: str = "fields",
        item_field: str | None = None,
        sparse: bool = True,
        init_std: float = 0.01,
    ) -> None:
        # dim, fusion and item_field are checked for a uniform interface; LR has no embeddings to fuse
        super().__init__(
            spec,
            dim=dim,
            fusion=fusion,
            item_field=item_field,
            sparse=sparse,
            init_std=init_std,
            linear=True,
            embedding=False,
        )

    def logits(self, batch: Batch) -> torch.Tensor:
        return self.linear(batch)


class FM(_EmbeddingModel):
    """Factorisation machine: LR + Σ_{i<j}⟨e_i, e_j⟩."""

    def __init__(self, spec: FeatureSpec, **kw) -> None:
        super().__init__(spec, linear=True, **kw)

    def logits(self, batch: Batch) -> torch.Tensor:
        emb, lin = self.embed_linear(batch)
        return lin + fm_interaction(emb)


class DNN(_EmbeddingModel):
    """MLP over x0 = the concatenated field embeddings."""

    def __init__(self, spec: FeatureSpec, *, mlp: Sequence[int] = (400, 400, 400), dropout: float = 0.0, **kw) -> None:
        super().__init__(spec, **kw)
        self.mlp_sizes = _check_layers(mlp, "mlp")
        dropout = check_float(dropout, "dropout", minimum=0, maximum=1, max_inclusive=False)
        self.deep = _mlp(self.num_inputs * self.dim, self.mlp_sizes, dropout, out_dim=1)

    def logits(self, batch: Batch) -> torch.Tensor:
        emb = self.embed(batch)
        return self.deep(emb.reshape(emb.shape[0], -1)).squeeze(1)


class WideDeep(DNN):
    """Wide & Deep: LR (wide) + MLP over x0 (deep)."""

    def __init__(self, spec: FeatureSpec, **kw) -> None:
        super().__init__(spec, linear=True, **kw)

    def logits(self, batch: Batch) -> torch.Tensor:
        emb, lin = self.embed_linear(batch)
        return lin + self.deep(emb.reshape(emb.shape[0], -1)).squeeze(1)


class DeepFM(DNN):
    """DeepFM: LR + FM + MLP(x0), sharing the field embeddings."""

    def __init__(self, spec: FeatureSpec, **kw) -> None:
        super().__init__(spec, linear=True, **kw)

    def logits(self, batch: Batch) -> torch.Tensor:
        emb, lin = self.embed_linear(batch)
        return lin + fm_interaction(emb) + self.deep(emb.reshape(emb.shape[0], -1)).squeeze(1)


class CrossNetwork(nn.Module):
    """DCN cross layers on x0 [B, D].

    ``"vector"`` (DCN): x_{l+1} = x0 (x_lᵀ w_l) + b_l + x_l. ``"matrix"`` (DCNv2): x_{l+1} = x0 ⊙ (W_l x_l + b_l) + x_l.
    """

    def __init__(self, in_dim: int, layers: int = 3, kind: str = "vector") -> None:
        super().__init__()
        self.kind = check_choice(kind, "kind", ("vector", "matrix"))
        layers = check_int(layers, "cross_layers", minimum=1)
        shape = (layers, in_dim) if kind == "vector" else (layers, in_dim, in_dim)
        self.weight = nn.Parameter(torch.empty(shape))
        self.bias = nn.Parameter(torch.zeros(layers, in_dim))
        for w in self.weight:
            if kind == "vector":
                nn.init.normal_(w, 0.0, 1.0 / math.sqrt(in_dim))
            else:
                nn.init.xavier_normal_(w)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x = x0
        for w, b in zip(self.weight, self.bias, strict=True):
            x = self._vector_layer(x0, x, w, b) if self.kind == "vector" else self._matrix_layer(x0, x, w, b)
        return x

    @staticmethod
    def _vector_layer(x0: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return x0 * (x @ w).unsqueeze(1) + b + x  # x0 (x_lᵀ w_l) + b_l + x_l

    @staticmethod
    def _matrix_layer(x0: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return x0 * F.linear(x, w, b) + x  # x0 ⊙ (W_l x_l + b_l) + x_l


class DCN(_EmbeddingModel):
    """Deep & Cross: [CrossNetwork(x0); MLP(x0)] -> Linear -> logit."""

    kind = "vector"

    def __init__(
        self,
        spec: FeatureSpec,
        *,
        mlp: Sequence[int] = (400, 400, 400),
        dropout: float = 0.0,
        cross_layers: int = 3,
        **kw,
    ) -> None:
        super().__init__(spec, **kw)
        self.mlp_sizes = _check_layers(mlp, "mlp")
        dropout = check_float(dropout, "dropout", minimum=0, maximum=1, max_inclusive=False)
        width = self.num_inputs * self.dim
        self.cross = CrossNetwork(width, cross_layers, self.kind)
        self.deep = _mlp(width, self.mlp_sizes, dropout) if self.mlp_sizes else None
        self.out = nn.Linear(width + (self.mlp_sizes[-1] if self.mlp_sizes else 0), 1)

    def logits(self, batch: Batch) -> torch.Tensor:
        emb = self.embed(batch)
        x0 = emb.reshape(emb.shape[0], -1)
        parts = [self.cross(x0)]
        if self.deep is not None:
            parts.append(self.deep(x0))
        return self.out(torch.cat(parts, 1)).squeeze(1)


class DCNv2(DCN):
    """DCN-V2 (matrix cross layers) in parallel with the MLP."""

    kind = "matrix"


class MultiHeadFieldAttention(nn.Module):
    """One AutoInt layer: multi-head self-attention over fields [B, N, d_in] -> [B, N, heads·head_dim].

    out = ReLU(concat_h softmax(Q_h K_hᵀ / √head_dim) V_h + X W_res).
    """

    def __init__(self, in_dim: int, heads: int = 2, head_dim: int = 8) -> None:
        super().__init__()
        self.heads = check_int(heads, "heads", minimum=1)
        self.head_dim = check_int(head_dim, "head_dim", minimum=1)
        out = self.heads * self.head_dim
        self.qkv = nn.Linear(in_dim, 3 * out, bias=False)
        self.res = nn.Linear(in_dim, out, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        h, a = self.heads, self.head_dim
        q, k, v = self.qkv(x).view(b, n, 3 * h, a).transpose(1, 2).split(h, 1)  # each [B, H, N, a]
        # explicit softmax(QKᵀ/√a)V: with a few dozen fields this beats the CPU flash-attention kernel
        scores = torch.matmul(q, k.transpose(-1, -2)) * (1.0 / math.sqrt(a))
        att = torch.matmul(torch.softmax(scores, -1), v)
        return torch.relu(att.transpose(1, 2).reshape(b, n, h * a) + self.res(x))


class AutoInt(_EmbeddingModel):
    """AutoInt+: stacked field self-attention (flattened) in parallel with the MLP, then Linear -> logit."""

    def __init__(
        self,
        spec: FeatureSpec,
        *,
        mlp: Sequence[int] = (400, 400, 400),
        dropout: float = 0.0,
        att_layers: int = 3,
        heads: int = 2,
        head_dim: int = 8,
        **kw,
    ) -> None:
        super().__init__(spec, **kw)
        self.mlp_sizes = _check_layers(mlp, "mlp")
        dropout = check_float(dropout, "dropout", minimum=0, maximum=1, max_inclusive=False)
        att_layers = check_int(att_layers, "att_layers", minimum=1)
        widths = [self.dim] + [check_int(heads, "heads", minimum=1) * check_int(head_dim, "head_dim", minimum=1)] * (
            att_layers
        )
        self.attention = nn.Sequential(
            *[MultiHeadFieldAttention(widths[i], heads, head_dim) for i in range(att_layers)]
        )
        width = self.num_inputs * self.dim
        self.deep = _mlp(width, self.mlp_sizes, dropout) if self.mlp_sizes else None
        self.out = nn.Linear(self.num_inputs * widths[-1] + (self.mlp_sizes[-1] if self.mlp_sizes else 0), 1)

    def logits(self, batch: Batch) -> torch.Tensor:
        emb = self.embed(batch)
        b = emb.shape[0]
        parts = [self.attention(emb).reshape(b, -1)]
        if self.deep is not None:
            parts.append(self.deep(emb.reshape(b, -1)))
        return self.out(torch.cat(parts, 1)).squeeze(1)


class CIN(nn.Module):
    """Compressed Interaction Network: X^k_h = Σ_ij W^{k,h}_ij (X^{k−1}_i ∘ X^0_j), sum-pooled over d.

    With ``split_half`` every layer but the last passes half its maps on and pools the other half
    (xDeepFM's default). Returns the pooled maps [B, Σ pooled maps] (:attr:`out_dim`).
    """

    def __init__(self, num_fields: int, layers: Sequence[int] = (128, 128), split_half: bool = True) -> None:
        super().__init__()
        self.layer_sizes = _check_layers(layers, "cin", allow_empty=False)
        self.split_half = bool(split_half)
        self.weights = nn.ParameterList()
        self.next_sizes, out_dim, prev = [], 0, num_fields
        for i, h in enumerate(self.layer_sizes):
            last = i == len(self.layer_sizes) - 1
            if self.split_half and not last and h % 2:
                raise ValueError(f"cin[{i}] must be even with split_half=True, got {h}")
            w = nn.Parameter(torch.empty(h, prev * num_fields))
            nn.init.xavier_uniform_(w)
            self.weights.append(w)
            nxt = h // 2 if self.split_half and not last else h
            self.next_sizes.append(nxt)
            out_dim += h - nxt if self.split_half and not last else h
            prev = nxt
        self.out_dim = out_dim

    @staticmethod
    def layer(x_prev: torch.Tensor, x0: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """One CIN layer: [B, H, d], [B, m, d], W [H', H·m] (column i·m + j) -> [B, H', d]."""
        return CIN._layer_t(x_prev.transpose(1, 2), x0.transpose(1, 2), weight).transpose(1, 2)

    @staticmethod
    def _layer_t(xt: torch.Tensor, x0t: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        # embedding axis first ([B, d, H]): the layer is one [B·d, H·m] x [H·m, H'] GEMM
        b, d, h = xt.shape
        z = (xt.unsqueeze(3) * x0t.unsqueeze(2)).reshape(b * d, h * x0t.shape[2])
        return (z @ weight.T).view(b, d, -1)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        x0t = x0.transpose(1, 2).contiguous()  # [B, d, m]
        x, pooled = x0t, []
        for i, w in enumerate(self.weights):
            xk = self._layer_t(x, x0t, w)  # [B, d, H_k]
            nxt = self.next_sizes[i]
            if self.split_half and i < len(self.weights) - 1:
                x, out = xk[..., :nxt], xk[..., nxt:]
            else:
                x, out = xk, xk
            pooled.append(out.sum(1))
        return torch.cat(pooled, 1)


class XDeepFM(DNN):
    """xDeepFM: LR + CIN (sum pooling -> Linear) + MLP(x0)."""

    def __init__(self, spec: FeatureSpec, *, cin: Sequence[int] = (128, 128), split_half: bool = True, **kw) -> None:
        super().__init__(spec, linear=True, **kw)
        self.cin = CIN(self.num_inputs, cin, split_half)
        self.cin_out = nn.Linear(self.cin.out_dim, 1)

    def logits(self, batch: Batch) -> torch.Tensor:
        emb, lin = self.embed_linear(batch)
        deep = self.deep(emb.reshape(emb.shape[0], -1)).squeeze(1)
        return lin + self.cin_out(self.cin(emb)).squeeze(1) + deep


# ----------------------------------------------------------------------------------------------------------
# multi-scenario models


def _ddp_active() -> bool:
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


class PerScene(CTRModel):
    """One independent model per scene; each row goes only through its scene's model.

    ``base_factory(single_scene_spec)`` builds one model; it receives ``spec`` with ``num_scenes=1``.
    """

    def __init__(self, spec: FeatureSpec, base_factory: Callable[[FeatureSpec], CTRModel]) -> None:
        super().__init__(spec)
        if not callable(base_factory):
            raise TypeError(f"base_factory must be callable (spec -> model), got {type(base_factory).__name__}")
        sub = FeatureSpec(spec.field_names, spec.field_sizes, num_scenes=1, vector_dims=spec.vector_dims)
        models = []
        for _ in range(spec.num_scenes):
            m = base_factory(sub)
            if not isinstance(m, CTRModel):
                raise TypeError(f"base_factory must return a CTRModel, got {type(m).__name__}")
            m.validate_inputs = False
            models.append(m)
        self.models = nn.ModuleList(models)
        self._keys = ("ids", *spec.vector_dims)

    def logits(self, batch: Batch) -> torch.Tensor:
        scene = batch.get("scene")
        if scene is None:  # one scene
            return self.models[0].logits({k: batch[k] for k in self._keys})
        order, groups = scene_groups(scene, self.spec.num_scenes)
        if len(groups) == 1:
            return self.models[groups[0][0]].logits({k: batch[k] for k in self._keys})
        sorted_batch = {k: batch[k].index_select(0, order) for k in self._keys}
        outs = [self.models[s].logits({k: v[a:b] for k, v in sorted_batch.items()}) for s, a, b in groups]
        out = _unsort(order, torch.cat(outs))
        if self.training and torch.is_grad_enabled() and _ddp_active():
            out = out + self._idle_sparse_term({s for s, _, _ in groups})
        return out

    def _idle_sparse_term(self, present: set[int]) -> torch.Tensor:
        """0 x an empty lookup of each idle scene's sparse tables: under DDP every rank must produce a sparse
        gradient for every sparse table (an empty one is fine), or the all-reduce fails."""
        term = torch.zeros(())
        empty = torch.zeros(0, dtype=torch.int64)
        for s, m in enumerate(self.models):
            if s in present:
                continue
            for mod in m.modules():
                if isinstance(mod, nn.Embedding) and mod.sparse:
                    term = term + 0.0 * F.embedding(empty, mod.weight, sparse=True).sum()
        return term


class Pooled(CTRModel):
    """One model over all scenes with the scene as an extra categorical field (id = scene + 1, 0 = null)."""

    def __init__(self, spec: FeatureSpec, base_factory: Callable[[FeatureSpec], CTRModel]) -> None:
        super().__init__(spec)
        if "scene" in spec.field_names:
            raise ValueError("spec already has a field named 'scene'; Pooled adds it itself")
        self.inner_spec = FeatureSpec(
            (*spec.field_names, "scene"),
            (*spec.field_sizes, spec.num_scenes + 1),
            num_scenes=spec.num_scenes,
            vector_dims=spec.vector_dims,
        )
        self.model = base_factory(self.inner_spec)
        if not isinstance(self.model, CTRModel):
            raise TypeError(f"base_factory must return a CTRModel, got {type(self.model).__name__}")
        self.model.validate_inputs = False

    def logits(self, batch: Batch) -> torch.Tensor:
        ids = batch["ids"]
        scene = batch.get("scene")
        scene = ids.new_ones(ids.shape[0]) if scene is None else scene.to(ids.dtype) + 1
        return self.model.logits({**batch, "ids": torch.cat([ids, scene.unsqueeze(1)], 1)})


class _MultiScene(_EmbeddingModel):
    """Shared fused embedding; x0 [B, D]; rows grouped by scene for the scene-specific parts."""

    def __init__(self, spec: FeatureSpec, **kw) -> None:
        super().__init__(spec, **kw)
        self.x0_dim = self.num_inputs * self.dim

    def x0(self, batch: Batch) -> torch.Tensor:
        emb = self.embed(batch)
        return emb.reshape(emb.shape[0], -1)

    def _groups(self, batch: Batch, n: int) -> tuple[torch.Tensor, list[tuple[int, int, int]]]:
        scene = batch.get("scene")
        if scene is None:
            return torch.arange(n, device=batch["ids"].device), [(0, 0, n)]
        return scene_groups(scene, self.spec.num_scenes)

    def logits(self, batch: Batch) -> torch.Tensor:
        x = self.x0(batch)
        order, groups = self._groups(batch, x.shape[0])
        xs = x.index_select(0, order)
        outs = [self.scene_logits(s, xs[a:b]) for s, a, b in groups]
        return _unsort(order, torch.cat(outs))

    def scene_logits(self, s: int, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class SharedBottom(_MultiScene):
    """Shared MLP bottom over x0, one tower per scene (run on that scene's rows only)."""

    def __init__(
        self,
        spec: FeatureSpec,
        *,
        bottom: Sequence[int] = (256,),
        tower: Sequence[int] = (64,),
        dropout: float = 0.0,
        **kw,
    ) -> None:
        super().__init__(spec, **kw)
        bottom = _check_layers(bottom, "bottom", allow_empty=False)
        tower = _check_layers(tower, "tower")
        dropout = check_float(dropout, "dropout", minimum=0, maximum=1, max_inclusive=False)
        self.bottom = _mlp(self.x0_dim, bottom, dropout)
        self.towers = nn.ModuleList([_mlp(bottom[-1], tower, dropout, out_dim=1) for _ in range(spec.num_scenes)])

    def logits(self, batch: Batch) -> torch.Tensor:
        h = self.bottom(self.x0(batch))
        order, groups = self._groups(batch, h.shape[0])
        hs = h.index_select(0, order)
        return _unsort(order, torch.cat([self.towers[s](hs[a:b]).squeeze(1) for s, a, b in groups]))


class _ParallelMLP(nn.Module):
    """``n`` independent MLPs (experts) on the same input [B, in] -> [B, n, hidden[-1]], one matmul per layer."""

    def __init__(self, n: int, in_dim: int, hidden: Sequence[int], dropout: float = 0.0) -> None:
        super().__init__()
        self.n = n
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        width = in_dim
        for h in hidden:
            bound = 1.0 / math.sqrt(width)
            self.weights.append(nn.Parameter(torch.empty(n, width, h).uniform_(-bound, bound)))
            self.biases.append(nn.Parameter(torch.empty(n, 1, h).uniform_(-bound, bound)))
            width = h
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.out_dim = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        h = None
        for i, (w, bias) in enumerate(zip(self.weights, self.biases, strict=True)):
            if i == 0:  # shared input: one [B, in] x [in, n·h] matmul
                h = (x @ w.permute(1, 0, 2).reshape(w.shape[1], -1)).view(b, self.n, -1).transpose(0, 1)
            else:
                h = torch.bmm(h, w)
            h = torch.relu(h + bias)
            if self.dropout is not None:
                h = self.dropout(h)
        return h.transpose(0, 1)  # [B, n, h]


class MMoE(_MultiScene):
    """Multi-gate mixture of experts: shared experts on x0; per scene gate_s = softmax(W_s x0) and tower_s."""

    def __init__(
        self,
        spec: FeatureSpec,
        *,
        experts: int = 4,
        expert: Sequence[int] = (256,),
        tower: Sequence[int] = (64,),
        dropout: float = 0.0,
        **kw,
    ) -> None:
        super().__init__(spec, **kw)
        self.num_experts = check_int(experts, "experts", minimum=1)
        expert = _check_layers(expert, "expert", allow_empty=False)
        tower = _check_layers(tower, "tower")
        dropout = check_float(dropout, "dropout", minimum=0, maximum=1, max_inclusive=False)
        self.experts = _ParallelMLP(self.num_experts, self.x0_dim, expert, dropout)
        self.gates = nn.ModuleList([nn.Linear(self.x0_dim, self.num_experts) for _ in range(spec.num_scenes)])
        self.towers = nn.ModuleList([_mlp(expert[-1], tower, dropout, out_dim=1) for _ in range(spec.num_scenes)])

    def gate_weights(self, batch: Batch) -> torch.Tensor:
        """Each row's own scene's gate softmax(W_s x0): [B, experts]."""
        x = self.x0(batch)
        order, groups = self._groups(batch, x.shape[0])
        xs = x.index_select(0, order)
        return _unsort(order, torch.cat([torch.softmax(self.gates[s](xs[a:b]), 1) for s, a, b in groups]))

    def logits(self, batch: Batch) -> torch.Tensor:
        x = self.x0(batch)
        order, groups = self._groups(batch, x.shape[0])
        xs = x.index_select(0, order)
        es = self.experts(xs)  # [B, K, H] in scene order
        outs = []
        for s, a, b in groups:
            g = torch.softmax(self.gates[s](xs[a:b]), 1)
            mixed = torch.bmm(g.unsqueeze(1), es[a:b]).squeeze(1)
            outs.append(self.towers[s](mixed).squeeze(1))
        return _unsort(order, torch.cat(outs))


class PLE(_MultiScene):
    """Progressive layered extraction over scenes: per level, shared experts and each scene's specific experts.

    A row of scene s carries two states: its scene path h_s (gate_s over [shared experts(h_shared),
    specific experts_s(h_s)]) and the shared path h_shared (a shared gate over the same experts, on every
    level but the last). Level 1 starts both at x0; tower_s reads the last h_s.
    """

    def __init__(
        self,
        spec: FeatureSpec,
        *,
        shared_experts: int = 2,
        specific_experts: int = 1,
        levels: int = 2,
        expert: Sequence[int] = (256,),
        tower: Sequence[int] = (64,),
        dropout: float = 0.0,
        **kw,
    ) -> None:
        super().__init__(spec, **kw)
        ks = check_int(shared_experts, "shared_experts", minimum=1)
        kp = check_int(specific_experts, "specific_experts", minimum=1)
        self.levels = check_int(levels, "levels", minimum=1)
        expert = _check_layers(expert, "expert", allow_empty=False)
        tower = _check_layers(tower, "tower")
        dropout = check_float(dropout, "dropout", minimum=0, maximum=1, max_inclusive=False)
        S = spec.num_scenes
        self.shared = nn.ModuleList()
        self.specific = nn.ModuleList()  # [level][scene]
        self.scene_gates = nn.ModuleList()  # [level][scene]
        self.shared_gates = nn.ModuleList()  # levels - 1
        width = self.x0_dim
        for lvl in range(self.levels):
            self.shared.append(_ParallelMLP(ks, width, expert, dropout))
            self.specific.append(nn.ModuleList([_ParallelMLP(kp, width, expert, dropout) for _ in range(S)]))
            self.scene_gates.append(nn.ModuleList([nn.Linear(width, ks + kp) for _ in range(S)]))
            if lvl < self.levels - 1:
                self.shared_gates.append(nn.Linear(width, ks + kp))
            width = expert[-1]
        self.towers = nn.ModuleList([_mlp(width, tower, dropout, out_dim=1) for _ in range(S)])

    def scene_logits(self, s: int, x: torch.Tensor) -> torch.Tensor:
        h_s, h_sh = x, x
        for lvl in range(self.levels):
            experts = torch.cat([self.shared[lvl](h_sh), self.specific[lvl][s](h_s)], 1)  # [n, ks + kp, H]
            g = torch.softmax(self.scene_gates[lvl][s](h_s), 1).unsqueeze(1)
            new_s = torch.bmm(g, experts).squeeze(1)
            if lvl < self.levels - 1:
                g_sh = torch.softmax(self.shared_gates[lvl](h_sh), 1).unsqueeze(1)
                h_sh = torch.bmm(g_sh, experts).squeeze(1)
            h_s = new_s
        return self.towers[s](h_s).squeeze(1)


class PartitionedNorm(nn.Module):
    """STAR's partitioned normalisation of one scene's rows x [n, D].

    z' = γ γ_s (z − μ_s) / √(σ_s² + ε) + β + β_s with μ_s, σ_s² the batch statistics of the scene's rows in
    training (biased variance, as BatchNorm) and its running statistics (momentum, unbiased variance) at
    inference. A one-row scene normalises to β + β_s and updates only its running mean.
    """

    def __init__(self, num_scenes: int, width: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps = check_float(eps, "eps", minimum=0, min_inclusive=False)
        self.momentum = check_float(momentum, "momentum", minimum=0, maximum=1)
        self.gamma = nn.Parameter(torch.ones(width))
        self.beta = nn.Parameter(torch.zeros(width))
        self.gamma_s = nn.ParameterList([nn.Parameter(torch.ones(width)) for _ in range(num_scenes)])
        self.beta_s = nn.ParameterList([nn.Parameter(torch.zeros(width)) for _ in range(num_scenes)])
        self.register_buffer("running_mean", torch.zeros(num_scenes, width))
        self.register_buffer("running_var", torch.ones(num_scenes, width))

    def forward(self, x: torch.Tensor, s: int) -> torch.Tensor:
        if self.training:
            var, mean = torch.var_mean(x, 0, correction=0)
            with torch.no_grad():
                m = self.momentum
                self.running_mean[s].mul_(1 - m).add_(mean.detach(), alpha=m)
                n = x.shape[0]
                if n > 1:
                    self.running_var[s].mul_(1 - m).add_(var.detach() * (n / (n - 1)), alpha=m)
        else:
            mean, var = self.running_mean[s], self.running_var[s]
        scale = self.gamma * self.gamma_s[s] * torch.rsqrt(var + self.eps)
        return (x - mean) * scale + (self.beta + self.beta_s[s])


class STAR(_MultiScene):
    """STAR: partitioned norm of x0, a star-topology MLP (W ⊙ W_s, b + b_s) per scene, plus an aux net's logit.

    The star MLP has hidden widths ``hidden`` with ReLU and an output layer of width 1, every layer
    star-shaped. The aux net reads [scene embedding (dim), x0] through ``aux_hidden`` and adds its logit
    (``aux=False`` drops it).
    """

    def __init__(
        self,
        spec: FeatureSpec,
        *,
        hidden: Sequence[int] = (256, 128),
        aux: bool = True,
        aux_hidden: Sequence[int] = (64,),
        eps: float = 1e-5,
        momentum: float = 0.1,
        dropout: float = 0.0,
        **kw,
    ) -> None:
        super().__init__(spec, **kw)
        hidden = _check_layers(hidden, "hidden")
        aux_hidden = _check_layers(aux_hidden, "aux_hidden")
        dropout = check_float(dropout, "dropout", minimum=0, maximum=1, max_inclusive=False)
        S = spec.num_scenes
        self.norm = PartitionedNorm(S, self.x0_dim, eps, momentum)
        widths = [self.x0_dim, *hidden, 1]
        self.shared_w = nn.ParameterList()
        self.shared_b = nn.ParameterList()
        self.specific_w = nn.ModuleList()  # [scene] -> ParameterList over layers
        self.specific_b = nn.ModuleList()
        for i in range(len(widths) - 1):
            lin = nn.Linear(widths[i], widths[i + 1])  # nn.Linear's initialisation for the shared weights
            self.shared_w.append(nn.Parameter(lin.weight.detach().clone()))
            self.shared_b.append(nn.Parameter(lin.bias.detach().clone()))
        for _ in range(S):
            self.specific_w.append(nn.ParameterList([nn.Parameter(torch.ones_like(w)) for w in self.shared_w]))
            self.specific_b.append(nn.ParameterList([nn.Parameter(torch.zeros_like(b)) for b in self.shared_b]))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else None
        self.aux = bool(aux)
        if self.aux:
            self.scene_embedding = nn.Embedding(S, self.dim)
            nn.init.normal_(self.scene_embedding.weight, 0.0, kw.get("init_std", 0.01))
            self.aux_net = _mlp(self.dim + self.x0_dim, aux_hidden, dropout, out_dim=1)

    def star_mlp(self, s: int, z: torch.Tensor) -> torch.Tensor:
        """Scene ``s``'s star-topology MLP on normalised rows [n, D] -> [n]."""
        last = len(self.shared_w) - 1
        for i in range(last + 1):
            w = self.shared_w[i] * self.specific_w[s][i]
            b = self.shared_b[i] + self.specific_b[s][i]
            z = F.linear(z, w, b)
            if i < last:
                z = torch.relu(z)
                if self.dropout is not None:
                    z = self.dropout(z)
        return z.squeeze(1)

    def logits(self, batch: Batch) -> torch.Tensor:
        x = self.x0(batch)
        order, groups = self._groups(batch, x.shape[0])
        xs = x.index_select(0, order)
        out = _unsort(order, torch.cat([self.star_mlp(s, self.norm(xs[a:b], s)) for s, a, b in groups]))
        if self.aux:
            scene = batch.get("scene")
            if scene is None:
                scene = torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
            out = out + self.aux_net(torch.cat([self.scene_embedding(scene), x], 1)).squeeze(1)
        return out


# ----------------------------------------------------------------------------------------------------------
# registry

_SINGLE: dict[str, type[CTRModel]] = {
    "lr": LR,
    "fm": FM,
    "dnn": DNN,
    "wdl": WideDeep,
    "deepfm": DeepFM,
    "dcn": DCN,
    "dcnv2": DCNv2,
    "autoint": AutoInt,
    "xdeepfm": XDeepFM,
}
_MLP_ARG = {"shared_bottom": "bottom", "mmoe": "expert", "ple": "expert", "star": "hidden"}
_MULTI: dict[str, type[CTRModel]] = {"shared_bottom": SharedBottom, "mmoe": MMoE, "ple": PLE, "star": STAR}


def build_model(name: str, spec: FeatureSpec, *, dim: int = 16, mlp: Sequence[int] | None = None, **kw) -> CTRModel:
    """Build a registered model by name.

    ``mlp`` is the model's main MLP: the deep part of the single-scenario models (default 400-400-400),
    SharedBottom's bottom (256), the MMoE/PLE expert widths (256), STAR's star MLP (256-128); ``None``
    keeps the model's default. ``per_scene`` and ``pooled`` take ``base="deepfm"`` (any single-scenario
    name) and pass ``dim``, ``mlp`` and ``**kw`` to it. Other keywords go to the model's class (e.g.
    ``fusion``, ``dropout``, ``cross_layers``, ``experts``, ``aux``).

    >>> spec = FeatureSpec(["user_id", "item_id"], [11, 21], num_scenes=3)
    >>> m = build_model("star", spec, dim=4)
    >>> batch = {"ids": torch.tensor([[1, 2], [3, 4]]), "scene": torch.tensor([0, 2])}
    >>> m(batch).shape
    torch.Size([2])
    >>> build_model("nope", spec)
    Traceback (most recent call last):
    ValueError: name must be one of 'lr', 'fm', 'dnn', 'wdl', 'deepfm', 'dcn', 'dcnv2', 'autoint', 'xdeepfm', \
'per_scene', 'pooled', 'shared_bottom', 'mmoe', 'ple', 'star'; got 'nope'
    """
    check_choice(name, "name", MODEL_NAMES)
    if not isinstance(spec, FeatureSpec):
        raise TypeError(f"spec must be a FeatureSpec, got {type(spec).__name__}")
    if name in ("per_scene", "pooled"):
        base = kw.pop("base", "deepfm")
        check_choice(base, "base", SINGLE_SCENARIO)
        build_model(base, spec, dim=dim, mlp=mlp, **kw)  # validates the arguments once, up front

        def factory(sub: FeatureSpec) -> CTRModel:
            return build_model(base, sub, dim=dim, mlp=mlp, **kw)

        return PerScene(spec, factory) if name == "per_scene" else Pooled(spec, factory)
    if "base" in kw:
        raise ValueError(f"base is only an argument of 'per_scene' and 'pooled', not of {name!r}")
    if name in _SINGLE:
        if name in ("lr", "fm"):
            if mlp is not None:
                raise ValueError(f"mlp is not an argument of {name!r} (it has no MLP)")
            return _SINGLE[name](spec, dim=dim, **kw)
        return _SINGLE[name](spec, dim=dim, mlp=(400, 400, 400) if mlp is None else mlp, **kw)
    if mlp is not None:
        kw[_MLP_ARG[name]] = mlp
    return _MULTI[name](spec, dim=dim, **kw)
