"""bastion.ctr.models: formulas against hand-written references, per-scene isolation, training, validation."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bastion.ctr.features import FeatureSpec
from bastion.ctr.models import (
    CIN,
    DCN,
    MODEL_NAMES,
    STAR,
    AutoInt,
    ContentFusion,
    CrossNetwork,
    FusedEmbedding,
    MMoE,
    MultiHeadFieldAttention,
    XDeepFM,
    build_model,
    fm_interaction,
    scene_groups,
    split_parameters,
)

SPEC = FeatureSpec(
    ["user_id", "item_id", "cat", "ctx"], [30, 20, 7, 5], num_scenes=3, vector_dims={"title": 12, "image": 6}
)
SMALL = {"dim": 4, "mlp": (16, 8)}
MULTI_SMALL = {
    "per_scene": {"dim": 4, "mlp": (8,)},
    "pooled": {"dim": 4, "mlp": (8,)},
    "shared_bottom": {"dim": 4, "mlp": (16,), "tower": (8,)},
    "mmoe": {"dim": 4, "mlp": (16,), "tower": (8,)},
    "ple": {"dim": 4, "mlp": (16,), "tower": (8,)},
    "star": {"dim": 4, "mlp": (16, 8), "aux_hidden": (8,)},
}


def small_kw(name: str) -> dict:
    if name in ("lr", "fm"):
        return {"dim": 4}
    if name in MULTI_SMALL:
        return dict(MULTI_SMALL[name])
    return dict(SMALL, **({"cin": (6, 4)} if name == "xdeepfm" else {}))


def make_batch(n: int, spec: FeatureSpec = SPEC, seed: int = 0, scenes=None) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.stack([torch.randint(0, s, (n,), generator=g) for s in spec.field_sizes], 1)
    pool = torch.tensor(scenes if scenes is not None else range(spec.num_scenes))
    batch = {
        "ids": ids,
        "scene": pool[torch.randint(0, len(pool), (n,), generator=g)],
        "label": torch.randint(0, 2, (n,), generator=g).float(),
    }
    for name, d in spec.vector_dims.items():
        batch[name] = torch.randn(n, d, generator=g)
    return batch


def brute_pairs(emb: torch.Tensor) -> torch.Tensor:
    f = emb.shape[1]
    return sum((emb[:, i] * emb[:, j]).sum(1) for i, j in itertools.combinations(range(f), 2))


# 1. FM ---------------------------------------------------------------------------------------------------


def test_fm_term_equals_pair_sum():
    g = torch.Generator().manual_seed(1)
    e64 = torch.randn(16, 7, 5, generator=g, dtype=torch.float64)
    assert torch.allclose(fm_interaction(e64), brute_pairs(e64), atol=1e-10)
    e32 = 0.3 * torch.randn(64, 26, 16, generator=g)
    assert torch.allclose(fm_interaction(e32), brute_pairs(e32.double()).float(), atol=1e-5)
    # the FM model: LR + pair sum over the fused stack (4 categorical + 2 content fields)
    torch.manual_seed(0)
    m = build_model("fm", SPEC, dim=4)
    batch = make_batch(32)
    emb, lin = m.embed_linear(batch)
    assert emb.shape == (32, 6, 4)
    assert torch.allclose(m(batch), lin + brute_pairs(emb), atol=1e-5)
    # LR part by hand: per-id weights live in the fused table's last column
    w = m.embedding.table.weight[:, 4]
    rows = batch["ids"] + SPEC.offsets()
    content = torch.cat([batch["title"], batch["image"]], 1) @ m.linear.content.weight.squeeze(0)
    assert torch.allclose(lin, w[rows].sum(1) + m.linear.bias + content, atol=1e-6)


# 2. MMoE gates -------------------------------------------------------------------------------------------


def test_mmoe_gates_sum_to_one_and_use_the_rows_scene():
    torch.manual_seed(0)
    m = build_model("mmoe", SPEC, dim=4, mlp=(16,), tower=(8,))
    assert isinstance(m, MMoE) and m.num_experts == 4
    batch = make_batch(64)
    g = m.gate_weights(batch)
    assert g.shape == (64, 4)
    assert (g >= 0).all()
    assert torch.allclose(g.sum(1), torch.ones(64), atol=1e-6)
    x0 = m.x0(batch)
    for s in range(3):
        rows = batch["scene"] == s
        assert rows.any()
        assert torch.allclose(g[rows].sum(1), torch.ones(int(rows.sum())), atol=1e-6)
        assert torch.allclose(g[rows], torch.softmax(m.gates[s](x0[rows]), 1), atol=1e-6)
    # the logit by hand: tower_s(Σ_k g_k expert_k(x0))
    out = m(batch)
    for i in range(0, 64, 7):
        s = int(batch["scene"][i])
        experts = []
        for k in range(4):
            w, b = m.experts.weights[0][k], m.experts.biases[0][k, 0]
            experts.append(torch.relu(x0[i] @ w + b))
        mixed = sum(g[i, k] * experts[k] for k in range(4))
        assert torch.allclose(out[i], m.towers[s](mixed).squeeze(), atol=1e-5)


# 3. per-scene isolation ----------------------------------------------------------------------------------


def scene_params(m, name: str, s: int) -> list[nn.Parameter]:
    if name == "per_scene":
        return list(m.models[s].parameters())
    if name == "shared_bottom":
        return list(m.towers[s].parameters())
    if name == "mmoe":
        return [*m.gates[s].parameters(), *m.towers[s].parameters()]
    if name == "ple":
        params = list(m.towers[s].parameters())
        for lvl in range(m.levels):
            params += [*m.specific[lvl][s].parameters(), *m.scene_gates[lvl][s].parameters()]
        return params
    if name == "star":
        return [*m.specific_w[s], *m.specific_b[s], m.norm.gamma_s[s], m.norm.beta_s[s]]
    raise AssertionError(name)


@pytest.mark.parametrize("name", ["per_scene", "shared_bottom", "mmoe", "ple", "star"])
def test_absent_scene_gets_no_gradient(name):
    torch.manual_seed(0)
    m = build_model(name, SPEC, **small_kw(name))
    batch = make_batch(48, scenes=[0, 2])
    before = m.norm.running_mean.clone() if name == "star" else None
    F.binary_cross_entropy_with_logits(m(batch), batch["label"]).backward()
    absent = scene_params(m, name, 1)
    assert absent
    # None, not merely zero: the absent scene's parts were never run (masking all towers would give zeros)
    assert all(p.grad is None for p in absent)
    for s in (0, 2):
        present = scene_params(m, name, s)
        assert any(p.grad is not None and p.grad.to_dense().abs().sum() > 0 for p in present)
    if name == "star":  # running statistics of the absent scene untouched, the others moved
        assert torch.equal(m.norm.running_mean[1], before[1])
        assert not torch.equal(m.norm.running_mean[0], before[0])


@pytest.mark.parametrize("name", ["per_scene", "pooled", "shared_bottom", "mmoe", "ple", "star"])
def test_scene_rows_do_not_depend_on_other_scenes(name):
    """Training-mode logits of a scene's rows equal those from a batch with only that scene (no whole-batch norm)."""
    torch.manual_seed(0)
    m = build_model(name, SPEC, **small_kw(name))
    m.train()
    batch = make_batch(60)
    out = m(batch)
    for s in range(3):
        rows = batch["scene"] == s
        sub = {k: v[rows] for k, v in batch.items()}
        assert torch.allclose(m(sub), out[rows], atol=1e-5)


def test_per_scene_routes_rows_to_their_model():
    torch.manual_seed(0)
    m = build_model("per_scene", SPEC, base="fm", dim=4)
    batch = make_batch(40)
    out = m(batch)
    for s in range(3):
        rows = batch["scene"] == s
        sub = {k: batch[k][rows] for k in ("ids", "title", "image")}
        assert torch.allclose(out[rows], m.models[s](sub), atol=1e-6)
        other = {k: batch[k][rows] for k in ("ids", "title", "image")}
        assert not torch.allclose(out[rows], m.models[(s + 1) % 3](other), atol=1e-6)


def test_pooled_adds_scene_field():
    torch.manual_seed(0)
    m = build_model("pooled", SPEC, base="deepfm", dim=4, mlp=(8,))
    assert m.model.spec.field_names[-1] == "scene" and m.model.spec.field_sizes[-1] == 4
    batch = make_batch(20)
    ids = torch.cat([batch["ids"], batch["scene"].unsqueeze(1) + 1], 1)
    assert torch.allclose(m(batch), m.model({**batch, "ids": ids}), atol=1e-6)
    moved = {**batch, "scene": (batch["scene"] + 1) % 3}
    assert not torch.allclose(m(batch), m(moved))


def test_scene_groups():
    order, groups = scene_groups(torch.tensor([1, 1, 0, 3, 1]), 4)
    assert order.tolist() == [2, 0, 1, 4, 3]
    assert groups == [(0, 0, 1), (1, 1, 4), (3, 4, 5)]


# 4. STAR by hand -----------------------------------------------------------------------------------------


def star_reference(m: STAR, batch, *, use_running: bool, specific: bool) -> torch.Tensor:
    x0 = m.x0(batch)
    out = torch.empty(x0.shape[0])
    n = m.norm
    for s in range(SPEC.num_scenes):
        rows = batch["scene"] == s
        if not rows.any():
            continue
        x = x0[rows]
        if use_running:
            mu, var = n.running_mean[s], n.running_var[s]
        else:
            mu, var = x.mean(0), ((x - x.mean(0)) ** 2).mean(0)
        z = n.gamma * n.gamma_s[s] * (x - mu) / torch.sqrt(var + n.eps) + n.beta + n.beta_s[s]
        layers = len(m.shared_w)
        for i in range(layers):
            w = m.shared_w[i] * (m.specific_w[s][i] if specific else 1.0)
            b = m.shared_b[i] + (m.specific_b[s][i] if specific else 0.0)
            z = z @ w.T + b
            if i < layers - 1:
                z = torch.relu(z)
        out[rows] = z.squeeze(1)
    return out


def test_star_unit_specific_weights_equal_shared_mlp_with_per_scene_norm():
    torch.manual_seed(0)
    m = build_model("star", SPEC, dim=4, mlp=(16, 8), aux=False)
    with torch.no_grad():  # non-trivial norm parameters; specific weights stay 1, specific biases 0
        for p in [m.norm.gamma, m.norm.beta, *m.norm.gamma_s, *m.norm.beta_s]:
            p.add_(0.3 * torch.randn_like(p))
    assert all(torch.equal(w, torch.ones_like(w)) for ws in m.specific_w for w in ws)
    batch = make_batch(90)
    m.train()
    rm, rv = m.norm.running_mean.clone(), m.norm.running_var.clone()
    out = m(batch)
    assert torch.allclose(out, star_reference(m, batch, use_running=False, specific=False), atol=1e-5)
    # running statistics: momentum 0.1 toward the scene's batch mean and unbiased variance
    x0 = m.x0(batch)
    for s in range(3):
        x = x0[batch["scene"] == s]
        assert torch.allclose(m.norm.running_mean[s], 0.9 * rm[s] + 0.1 * x.mean(0), atol=1e-6)
        assert torch.allclose(m.norm.running_var[s], 0.9 * rv[s] + 0.1 * x.var(0, unbiased=True), atol=1e-6)
    # inference uses the running statistics, row by row (a single row gives the same logit)
    m.eval()
    ref = star_reference(m, batch, use_running=True, specific=False)
    assert torch.allclose(m(batch), ref, atol=1e-5)
    one = {k: v[:1] for k, v in batch.items()}
    assert torch.allclose(m(one), ref[:1], atol=1e-5)


def test_star_one_row_scene_in_training():
    torch.manual_seed(0)
    m = build_model("star", SPEC, dim=4, mlp=(8,), aux=False)
    batch = make_batch(10, scenes=[0])
    batch["scene"][3] = 2  # scene 2 has one row: normalises to β + β_s, updates its running mean only
    rv = m.norm.running_var.clone()
    out = m(batch)
    assert torch.isfinite(out).all()
    assert torch.allclose(out[3], m.star_mlp(2, (m.norm.beta + m.norm.beta_s[2]).unsqueeze(0))[0], atol=1e-6)
    assert torch.equal(m.norm.running_var[2], rv[2]) and not torch.equal(m.norm.running_var[0], rv[0])


def test_star_specific_weights_and_aux_net():
    torch.manual_seed(0)
    m = build_model("star", SPEC, dim=4, mlp=(16, 8), aux_hidden=(8,))
    with torch.no_grad():
        for p in [*itertools.chain.from_iterable(m.specific_w), *itertools.chain.from_iterable(m.specific_b)]:
            p.add_(0.5 * torch.randn_like(p))
    batch = make_batch(50)
    m.train()
    out = m(batch)
    star = star_reference(m, batch, use_running=False, specific=True)
    x0 = m.x0(batch)
    aux = m.aux_net(torch.cat([m.scene_embedding(batch["scene"]), x0], 1)).squeeze(1)
    assert torch.allclose(out, star + aux, atol=1e-5)


# 5. cross layers, AutoInt, CIN ---------------------------------------------------------------------------


def cross_by_hand(kind: str, x0: torch.Tensor, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    if kind == "vector":
        return x0 * torch.dot(x, w) + b + x  # x0 (x_lᵀ w_l) + b_l + x_l
    return x0 * (w @ x + b) + x  # x0 ⊙ (W_l x_l + b_l) + x_l


def test_dcn_cross_layers_by_hand():
    torch.manual_seed(0)
    x0 = torch.randn(5, 6)
    for kind in ("vector", "matrix"):
        net = CrossNetwork(6, layers=2, kind=kind)
        with torch.no_grad():
            net.bias.normal_()
        out = net(x0)
        for r in range(5):
            x = x0[r]
            for layer in range(2):
                w, b = net.weight[layer], net.bias[layer]
                x = cross_by_hand(kind, x0[r], x, w, b)
            assert torch.allclose(out[r], x, atol=1e-5)
    m = build_model("dcn", SPEC, **SMALL)
    assert (
        isinstance(m, DCN) and m.cross.kind == "vector" and build_model("dcnv2", SPEC, **SMALL).cross.kind == "matrix"
    )
    assert m(make_batch(9)).shape == (9,)


def test_autoint_layer_by_hand():
    torch.manual_seed(0)
    heads, a, n, d = 2, 3, 5, 4
    layer = MultiHeadFieldAttention(d, heads, a)
    x = torch.randn(2, n, d)
    out = layer(x)
    assert out.shape == (2, n, heads * a)
    wq, wk, wv = layer.qkv.weight.split(heads * a, 0)
    for bi in range(2):
        cols = []
        for h in range(heads):
            sl = slice(h * a, (h + 1) * a)
            q, k, v = x[bi] @ wq[sl].T, x[bi] @ wk[sl].T, x[bi] @ wv[sl].T
            cols.append(torch.softmax(q @ k.T / math.sqrt(a), 1) @ v)
        ref = torch.relu(torch.cat(cols, 1) + x[bi] @ layer.res.weight.T)
        assert torch.allclose(out[bi], ref, atol=1e-5)
    m = build_model("autoint", SPEC, dim=4, mlp=(8,), att_layers=2, heads=2, head_dim=3)
    assert isinstance(m, AutoInt) and m(make_batch(7)).shape == (7,)


def test_cin_layer_by_hand_and_shapes():
    torch.manual_seed(0)
    b, m_fields, h_prev, d, h_next = 3, 4, 5, 6, 7
    x0, xk = torch.randn(b, m_fields, d), torch.randn(b, h_prev, d)
    w = torch.randn(h_next, h_prev * m_fields)
    out = CIN.layer(xk, x0, w)
    ref = torch.zeros(b, h_next, d)
    for h in range(h_next):
        for i in range(h_prev):
            for j in range(m_fields):
                ref[:, h] += w[h, i * m_fields + j] * xk[:, i] * x0[:, j]
    assert torch.allclose(out, ref, atol=1e-4)
    assert torch.allclose(out, torch.einsum("hij,bid,bjd->bhd", w.view(h_next, h_prev, m_fields), xk, x0), atol=1e-4)
    cin = CIN(m_fields, (6, 4), split_half=True)  # 3 maps go on, 3 pooled; then 4 pooled
    assert cin.out_dim == 7 and cin(x0).shape == (b, 7)
    assert CIN(m_fields, (6, 4), split_half=False).out_dim == 10
    # the pooled output by hand for split-half
    x1 = CIN.layer(x0, x0, cin.weights[0])
    x2 = CIN.layer(x1[:, :3], x0, cin.weights[1])
    assert torch.allclose(cin(x0), torch.cat([x1[:, 3:].sum(2), x2.sum(2)], 1), atol=1e-5)
    xd = build_model("xdeepfm", SPEC, dim=4, mlp=(8,), cin=(6, 4))
    assert isinstance(xd, XDeepFM) and xd(make_batch(5)).shape == (5,)


# 6. every model trains; fused = separate tables; fusion variants -----------------------------------------


def separable_batch(n: int = 256, seed: int = 0) -> dict[str, torch.Tensor]:
    batch = make_batch(n, seed=seed)
    batch["label"] = (batch["ids"][:, 1] % 2 == 0).float()  # separable through the item id
    return batch


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_trains(name):
    torch.manual_seed(0)
    m = build_model(name, SPEC, **small_kw(name))
    batch = separable_batch()
    out = m(batch)
    assert out.shape == (256,) and out.dtype == torch.float32
    sparse, dense = split_parameters(m)
    tables = {id(mod.weight) for mod in m.modules() if isinstance(mod, nn.Embedding) and mod.sparse}
    assert sparse and {id(p) for p in sparse} == tables
    assert {id(p) for p in sparse} == {id(p) for p in m.sparse_parameters()}
    assert len(sparse) + len(dense) == len(list(m.parameters()))
    opts = [torch.optim.SparseAdam(sparse, lr=0.05), torch.optim.Adam(dense, lr=0.01)]
    losses = []
    for _ in range(25):
        loss = F.binary_cross_entropy_with_logits(m(batch), batch["label"])
        for o in opts:
            o.zero_grad()
        loss.backward()
        assert all(p.grad is None or p.grad.is_sparse for p in sparse)
        for o in opts:
            o.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_fused_embedding_equals_separate_tables():
    torch.manual_seed(0)
    fused = FusedEmbedding(SPEC, 5)
    std = fused.table.weight.std().item()
    assert 0.007 < std < 0.013 and fused.table.sparse
    tables, start = [], 0
    for size in SPEC.field_sizes:
        t = nn.Embedding(size, 5)
        with torch.no_grad():
            t.weight.copy_(fused.table.weight[start : start + size])
        tables.append(t)
        start += size
    ids = make_batch(40)["ids"]
    ref = torch.stack([t(ids[:, f]) for f, t in enumerate(tables)], 1)
    assert torch.equal(fused(ids), ref)


def test_content_fusion_variants_by_hand():
    torch.manual_seed(0)
    batch = make_batch(8)
    emb = torch.randn(8, 4, 3)
    fields = ContentFusion(SPEC, 3, "fields")
    out = fields(emb, batch)
    assert out.shape == (8, 6, 3) and torch.equal(out[:, :4], emb)
    assert torch.allclose(out[:, 4], fields.proj[0](batch["title"])) and torch.allclose(
        out[:, 5], fields.proj[1](batch["image"])
    )
    gate = ContentFusion(SPEC, 3, "gate")
    out = gate(emb, batch)
    t, v = gate.proj[0](batch["title"]), gate.proj[1](batch["image"])
    c = (t + v) / 2
    g = torch.sigmoid(gate.gate(torch.cat([emb[:, 1], c], 1)))
    assert out.shape == (8, 4, 3) and torch.equal(out[:, [0, 2, 3]], emb[:, [0, 2, 3]])
    assert torch.allclose(out[:, 1], g * emb[:, 1] + (1 - g) * c, atol=1e-6)
    att = ContentFusion(SPEC, 3, "attention", item_field="item_id")
    out = att(emb, batch)
    tokens = [emb[:, 1], att.proj[0](batch["title"]), att.proj[1](batch["image"])]
    scores = torch.cat([att.query(torch.tanh(att.att(tok))) for tok in tokens], 1)
    alpha = torch.softmax(scores, 1)
    assert torch.allclose(out[:, 1], sum(alpha[:, i : i + 1] * tokens[i] for i in range(3)), atol=1e-6)
    for fusion in ("gate", "attention"):
        m = build_model("deepfm", SPEC, fusion=fusion, **SMALL)
        assert m.num_inputs == 4 and m(batch).shape == (8,)


def test_single_scene_spec_without_scene_key():
    spec = FeatureSpec(["a", "b"], [6, 9])
    batch = {"ids": torch.tensor([[1, 2], [5, 8], [0, 0]])}
    for name in MODEL_NAMES:
        assert build_model(name, spec, **small_kw(name))(batch).shape == (3,), name


# 7. validation ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "kw", "match"),
    [
        ("nope", {}, "name must be one of"),
        ("deepfm", {"dim": 0}, "dim"),
        ("deepfm", {"mlp": (8, 0)}, r"mlp\[1\]"),
        ("dnn", {"dropout": 1.0}, "dropout"),
        ("deepfm", {"fusion": "concat"}, "fusion"),
        ("deepfm", {"init_std": 0.0}, "init_std"),
        ("dcn", {"cross_layers": 0}, "cross_layers"),
        ("autoint", {"heads": 0}, "heads"),
        ("xdeepfm", {"cin": (5, 4)}, r"cin\[0\]"),
        ("mmoe", {"experts": 0}, "experts"),
        ("ple", {"levels": 0}, "levels"),
        ("star", {"eps": -1.0}, "eps"),
        ("star", {"mlp": ()}, None),
        ("per_scene", {"base": "star"}, "base"),
        ("pooled", {"base": "deepfm", "dim": -2}, "dim"),
        ("deepfm", {"base": "fm"}, "base"),
        ("lr", {"mlp": (4,)}, "mlp"),
        ("fm", {"mlp": (4,)}, "mlp"),
    ],
)
def test_bad_constructor_args(name, kw, match):
    if match is None:  # an empty star MLP is allowed: only the output layer
        assert build_model(name, SPEC, **kw)(make_batch(4)).shape == (4,)
        return
    with pytest.raises(ValueError, match=match):
        build_model(name, SPEC, **kw)


def test_fusion_needs_item_field():
    spec = FeatureSpec(["u", "i"], [5, 5], vector_dims={"title": 3})
    with pytest.raises(ValueError, match="item_field"):
        build_model("deepfm", spec, fusion="gate", **SMALL)
    assert build_model("deepfm", spec, fusion="gate", item_field="i", **SMALL).num_inputs == 2
    with pytest.raises(TypeError, match="spec"):
        build_model("deepfm", {"fields": 2})


@pytest.mark.parametrize("name", ["deepfm", "star", "per_scene", "pooled"])
def test_bad_batches(name):
    m = build_model(name, SPEC, **small_kw(name))
    good = make_batch(6)
    m(good)

    def bad(match, exc=ValueError, **change):
        batch = {**good, **change}
        for k, v in change.items():
            if v is None:
                del batch[k]
        with pytest.raises(exc, match=match):
            m(batch)

    bad("'ids'", ids=None)
    bad("4 columns", ids=good["ids"][:, :3])
    ids = good["ids"].clone()
    ids[2, 1] = 20
    bad("'item_id'", ids=ids)
    ids[2, 1] = -1
    bad("'item_id'", ids=ids)
    bad("scene", scene=torch.tensor([0, 1, 2, 3, 0, 0]))
    bad("scene", scene=None)
    bad("scene", scene=torch.zeros(5, dtype=torch.int64))
    bad("scene", TypeError, scene=good["scene"].float())
    bad("'title'", title=None)
    bad("'image'", image=torch.zeros(6, 5))
    nan = good["title"].clone()
    nan[0, 0] = float("nan")
    bad("'title'", title=nan)
    bad("ids", TypeError, ids=good["ids"].float())
