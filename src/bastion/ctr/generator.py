"""A generator of AntM2C-shaped click logs at any row count, in memory O(chunk) (spec section 5, [R]).

The AntM2C release (users bring it) has 37 columns and five scenes whose users are shared while item ids are
disjoint, so content (text, image) is the only bridge between scenes and to cold items. This generator writes
the same 37 columns, plus the true click probability ``p_true``, with a click model that has exactly those
properties:

- five scenes with traffic shares ``.058/.246/.509/.113/.073`` and base logits ``b_s = -2.6, -1.6, -0.9,
  -1.3, -2.0``;
- users (about ``rows / 150``) with a taste vector ``u`` in R^16 drawn near 1-2 of 40 topic centroids, a bias
  N(0, .3) and per-scene activity Bernoulli ``.3/.6/.95/.45/.25`` (at least one scene each);
- items (about ``rows / 130``) with ids disjoint across scenes, Zipf(1.1) popularity inside their scene, a
  vector ``v`` near their topic's centroid and an id bias N(0, .6) that no content reveals;
- ``logit = b_s + u^T A_s v + user bias + item bias + a small hour-of-day term``, ``A_s = I + 0.35 G_s / 4``;
- optional down-sampling of negatives (the release kept about a third positives); ``p_true`` is the click
  probability *after* down-sampling, the best any model can do;
- text: 40 topics of 6 English words; a title is 3 words of the item's topic and 1 random word, entity names
  are noisy per row, the user's bill/service/query sequences are drawn from the user's topics;
- an image vector per item, ``P v + noise``, written next to the rows as an item-keyed array
  (``item_vectors.safetensors``) the way a user would ship encoder outputs for the release's PNGs;
- 27 anonymous categoricals ``deep_features_*``: 5 owned by the user, 5 by the item, 17 per-row noise, with
  cardinalities from 10 to 100,000; ``deep_features_10`` is the hour of day and carries the context term;
- 8 days of log time; 22% of items and 10% of users are born in the test window, so they are cold.

Rows are produced in time order, chunk by chunk, each chunk from its own ``(seed, chunk)`` random stream, and
written as Parquet under ``train/``, ``val/`` and ``test/`` split by :class:`~bastion.ctr.schema.DateSplit`'s
release bounds. Only the user and item tables (O(rows / 130)) live for the whole run.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from ..core.checks import check_float, check_int
from ..core.progress import progress

__all__ = [
    "CHECK_BOUNDS",
    "TOPIC_WORDS",
    "GeneratedData",
    "GeneratorConfig",
    "generate",
    "generator_checks",
    "public10m_arrow_schema",
]

SCENE_TRAFFIC = (0.058, 0.246, 0.509, 0.113, 0.073)
SCENE_ACTIVITY = (0.30, 0.60, 0.95, 0.45, 0.25)
SCENE_BIAS = (-2.6, -1.6, -0.9, -1.3, -2.0)
DEEP_CARDINALITIES = (
    # user-owned 0-4, item-owned 5-9, per row 10-26 (10 = hour of day)
    10,
    50,
    100,
    1_000,
    10_000,
    20,
    200,
    2_000,
    20_000,
    100_000,
    24,
    10,
    12,
    30,
    60,
    100,
    300,
    500,
    1_000,
    3_000,
    5_000,
    10_000,
    20_000,
    30_000,
    50_000,
    80_000,
    100_000,
)
START = datetime(2023, 7, 29)
DAYS = 8
TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# 40 topics x 6 English words; the words of a topic belong together, so a sentence encoder sees the topic.
TOPIC_WORDS: tuple[tuple[str, ...], ...] = (
    ("football", "goal", "stadium", "league", "referee", "striker"),
    ("tennis", "racket", "serve", "court", "volley", "tournament"),
    ("coffee", "espresso", "latte", "barista", "roast", "beans"),
    ("tea", "matcha", "oolong", "teapot", "herbal", "kettle"),
    ("pizza", "cheese", "oven", "pepperoni", "crust", "slice"),
    ("sushi", "salmon", "rice", "wasabi", "tuna", "seaweed"),
    ("hotel", "suite", "checkin", "lobby", "resort", "booking"),
    ("flight", "airline", "boarding", "airport", "luggage", "runway"),
    ("train", "railway", "ticket", "platform", "carriage", "station"),
    ("taxi", "driver", "ride", "fare", "route", "pickup"),
    ("movie", "cinema", "trailer", "director", "premiere", "popcorn"),
    ("music", "concert", "guitar", "album", "singer", "playlist"),
    ("book", "novel", "author", "chapter", "library", "paperback"),
    ("game", "console", "controller", "level", "arcade", "multiplayer"),
    ("phone", "smartphone", "charger", "screen", "battery", "handset"),
    ("laptop", "keyboard", "processor", "notebook", "monitor", "software"),
    ("insurance", "policy", "premium", "claim", "coverage", "deductible"),
    ("loan", "mortgage", "interest", "credit", "lender", "repayment"),
    ("fund", "stocks", "portfolio", "dividend", "investor", "shares"),
    ("savings", "deposit", "account", "bank", "balance", "withdrawal"),
    ("doctor", "clinic", "hospital", "nurse", "appointment", "checkup"),
    ("pharmacy", "medicine", "vitamin", "tablet", "prescription", "dosage"),
    ("fitness", "gym", "workout", "yoga", "treadmill", "trainer"),
    ("beauty", "lipstick", "skincare", "perfume", "cosmetics", "serum"),
    ("fashion", "dress", "jacket", "sneakers", "handbag", "denim"),
    ("baby", "diaper", "stroller", "crib", "toddler", "formula"),
    ("pet", "puppy", "kitten", "leash", "veterinarian", "kibble"),
    ("garden", "flowers", "seeds", "soil", "shovel", "greenhouse"),
    ("furniture", "sofa", "table", "wardrobe", "mattress", "bookshelf"),
    ("kitchen", "blender", "cookware", "knife", "toaster", "microwave"),
    ("car", "engine", "tyre", "dealer", "sedan", "mechanic"),
    ("fuel", "petrol", "diesel", "pump", "refuel", "gasoline"),
    ("electricity", "utility", "meter", "bill", "power", "outage"),
    ("school", "teacher", "homework", "classroom", "exam", "tuition"),
    ("course", "lecture", "certificate", "tutorial", "online", "lesson"),
    ("charity", "donation", "volunteer", "nonprofit", "fundraiser", "relief"),
    ("lottery", "jackpot", "raffle", "prize", "draw", "winner"),
    ("weather", "rain", "forecast", "umbrella", "storm", "sunshine"),
    ("news", "headline", "reporter", "journal", "breaking", "editorial"),
    ("recipe", "baking", "flour", "dessert", "chocolate", "pastry"),
)
ALL_WORDS = tuple(w for topic in TOPIC_WORDS for w in topic)
N_TOPICS = len(TOPIC_WORDS)
DIM = 16
_POOL = 64  # string variants per topic for the per-row text columns


@dataclass(frozen=True)
class GeneratorConfig:
    """Knobs of :func:`generate`; the defaults are the spec's."""

    rows: int = 1_000_000
    seed: int = 0
    rows_per_user: float = 150.0
    rows_per_item: float = 130.0
    zipf: float = 1.1
    topic_scale: float = 1.0
    item_noise: float = 0.5
    user_noise: float = 0.5
    user_bias_std: float = 0.3
    item_bias_std: float = 0.6
    interaction_scale: float = 1.5
    cold_item_share: float = 0.22
    cold_user_share: float = 0.10
    negative_keep: float | None = None
    image_dim: int = 64
    image_noise: float = 0.3
    chunk_rows: int = 500_000
    rows_per_file: int = 2_000_000
    row_group_size: int = 262_144
    compression: str = "zstd"
    scene_traffic: Sequence[float] = field(default=SCENE_TRAFFIC)
    scene_bias: Sequence[float] = field(default=SCENE_BIAS)

    def __post_init__(self) -> None:
        check_int(self.rows, "rows", minimum=1)
        check_int(self.seed, "seed", minimum=0)
        check_int(self.chunk_rows, "chunk_rows", minimum=1)
        check_int(self.rows_per_file, "rows_per_file", minimum=1)
        check_int(self.row_group_size, "row_group_size", minimum=1)
        check_int(self.image_dim, "image_dim", minimum=1)
        check_float(self.rows_per_user, "rows_per_user", minimum=1.0)
        check_float(self.rows_per_item, "rows_per_item", minimum=1.0)
        check_float(self.zipf, "zipf", minimum=0.0)
        for name in ("cold_item_share", "cold_user_share"):
            check_float(getattr(self, name), name, minimum=0.0, maximum=0.9)
        if self.negative_keep is not None:
            check_float(self.negative_keep, "negative_keep", minimum=1e-6, maximum=1.0)
        if len(self.scene_traffic) != 5 or len(self.scene_bias) != 5:
            raise ValueError("scene_traffic and scene_bias must have 5 entries (one per scene)")
        if abs(sum(self.scene_traffic) - 1.0) > 0.01 or min(self.scene_traffic) <= 0:
            raise ValueError(f"scene_traffic must be positive and sum to 1 (+-0.01), got {list(self.scene_traffic)}")


@dataclass
class GeneratedData:
    """Where :func:`generate` wrote its files, and the row counts."""

    root: Path
    rows: dict[str, int]
    files: dict[str, list[Path]]
    item_vectors: Path
    n_users: int
    n_items: int

    def split_files(self, split: str) -> list[Path]:
        if split not in self.files:
            raise ValueError(f"split must be one of {sorted(self.files)}, got {split!r}")
        return self.files[split]


def public10m_arrow_schema(*, with_truth: bool = True) -> pa.Schema:
    """The Arrow schema the generator writes: the release's 37 columns (plus ``p_true``)."""
    fields = [
        pa.field("user_id", pa.int64()),
        pa.field("item_id", pa.int64()),
        pa.field("log_time", pa.string()),
        pa.field("label", pa.int64()),
        pa.field("bill_entity_seq", pa.string()),
        pa.field("service_entity_seq", pa.string()),
        pa.field("query_entity_seq", pa.string()),
        pa.field("item_entity_names", pa.string()),
        pa.field("item_title", pa.string()),
        pa.field("scene", pa.int64()),
    ]
    fields += [pa.field(f"deep_features_{i}", pa.int64()) for i in range(27)]
    if with_truth:
        fields.append(pa.field("p_true", pa.float32()))
    return pa.schema(fields)


class _World:
    """The users, items and text pools: O(rows / 130) memory, built once from the seed."""

    def __init__(self, cfg: GeneratorConfig) -> None:
        rng = np.random.default_rng([cfg.seed, 0xC0FFEE])
        self.cfg = cfg
        n_users = max(20, round(cfg.rows / cfg.rows_per_user))
        n_items = max(25, round(cfg.rows / cfg.rows_per_item))
        traffic = np.asarray(cfg.scene_traffic, dtype=np.float64)
        self.traffic = traffic / traffic.sum()  # the spec's shares are rounded (they sum to 0.999)
        centroids = rng.normal(0.0, cfg.topic_scale, size=(N_TOPICS, DIM)) / math.sqrt(DIM) * 2.0
        g = rng.normal(size=(5, DIM, DIM))
        self.A = np.eye(DIM)[None] + 0.35 * g / 4.0
        self.scene_bias = np.asarray(cfg.scene_bias, dtype=np.float64)

        # users: 1-2 topics, taste vector, bias, scene activity, birth (10% born in the test window)
        n_topics_u = 1 + (rng.random(n_users) < 0.5)
        t1 = rng.integers(0, N_TOPICS, n_users)
        t2 = np.where(n_topics_u == 2, rng.integers(0, N_TOPICS, n_users), t1)
        self.user_topics = np.stack([t1, t2], 1)
        self.u = (centroids[t1] + centroids[t2]) / 2 + rng.normal(0, cfg.user_noise / math.sqrt(DIM), (n_users, DIM))
        self.user_bias = rng.normal(0, cfg.user_bias_std, n_users)
        active = rng.random((n_users, 5)) < np.asarray(SCENE_ACTIVITY)
        none = ~active.any(1)
        active[none, rng.integers(0, 5, int(none.sum()))] = True
        self.user_active = active
        self.user_cold = rng.random(n_users) < cfg.cold_user_share
        self.user_weight = rng.lognormal(0.0, 0.5, n_users)
        self.user_ids = _distinct_ids(rng, n_users, 10**9)
        self.user_deep = np.stack(
            [rng.integers(0, DEEP_CARDINALITIES[j], n_users) for j in range(5)], 1
        )  # user-owned deep features

        # items: disjoint per scene, count proportional to traffic, Zipf popularity, topic vector, id bias
        per_scene = np.maximum(5, np.round(traffic * n_items).astype(int))
        self.item_scene = np.repeat(np.arange(5), per_scene)
        n_items = int(per_scene.sum())
        self.item_topic = rng.integers(0, N_TOPICS, n_items)
        self.v = centroids[self.item_topic] + rng.normal(0, cfg.item_noise / math.sqrt(DIM), (n_items, DIM))
        self.item_bias = rng.normal(0, cfg.item_bias_std, n_items)
        self.item_cold = rng.random(n_items) < cfg.cold_item_share
        self.item_ids = _distinct_ids(rng, n_items, 5 * 10**9)
        self.item_deep = np.stack([rng.integers(0, DEEP_CARDINALITIES[5 + j], n_items) for j in range(5)], 1)
        proj = rng.normal(0, 1 / math.sqrt(DIM), (DIM, cfg.image_dim))
        self.image = (self.v @ proj + rng.normal(0, cfg.image_noise, (n_items, cfg.image_dim))).astype(np.float32)
        # titles: 3 words of the item's topic and one random word, in shuffled order
        words = np.asarray(ALL_WORDS, dtype=object)
        pick = np.argsort(rng.random((n_items, 6)), axis=1)[:, :3]
        topic_w = np.asarray(TOPIC_WORDS, dtype=object)[self.item_topic[:, None], pick]
        rand_w = words[rng.integers(0, len(words), n_items)]
        title = np.concatenate([topic_w, rand_w[:, None]], 1)
        order = np.argsort(rng.random((n_items, 4)), axis=1)
        title = np.take_along_axis(title, order, 1)
        self.titles = np.array([" ".join(t) for t in title], dtype=object)

        # per-topic pools of noisy text: entity names (2 words, 70% on-topic) and user sequences (3 words, 60%)
        self.entity_pool = _text_pool(rng, 2, 0.7)
        self.seq_pools = [_text_pool(rng, 3, 0.6) for _ in range(3)]

        # per-scene samplers: Zipf over a random ranking; warm-only before the test window
        self.scene_items = [np.flatnonzero(self.item_scene == s) for s in range(5)]
        self.scene_users = [np.flatnonzero(self.user_active[:, s]) for s in range(5)]
        self.item_cdf: dict[tuple[int, bool], np.ndarray] = {}
        self.user_cdf: dict[tuple[int, bool], np.ndarray] = {}
        for s in range(5):
            items = self.scene_items[s]
            rank = rng.permutation(items.size) + 1.0
            w = rank ** (-cfg.zipf)
            uw = self.user_weight[self.scene_users[s]]
            for test_window in (False, True):
                wi = w if test_window else np.where(self.item_cold[items], 0.0, w)
                wu = uw if test_window else np.where(self.user_cold[self.scene_users[s]], 0.0, uw)
                if wi.sum() <= 0:
                    wi = w
                if wu.sum() <= 0:
                    wu = uw
                self.item_cdf[(s, test_window)] = np.cumsum(wi) / wi.sum()
                self.user_cdf[(s, test_window)] = np.cumsum(wu) / wu.sum()
        self.n_users, self.n_items = n_users, n_items

    def logits(self, users: np.ndarray, items: np.ndarray, scene: np.ndarray, hour: np.ndarray) -> np.ndarray:
        inter = np.empty(users.shape[0])
        for s in range(5):  # u^T A_s v, one scene at a time (an [n, 16, 16] gather costs 6x more)
            sel = np.flatnonzero(scene == s)
            inter[sel] = ((self.u[users[sel]] @ self.A[s]) * self.v[items[sel]]).sum(1)
        inter *= self.cfg.interaction_scale
        hour_term = 0.15 * np.sin(2 * np.pi * hour / 24.0)
        return self.scene_bias[scene] + inter + self.user_bias[users] + self.item_bias[items] + hour_term


def _distinct_ids(rng: np.random.Generator, n: int, offset: int) -> np.ndarray:
    """``n`` distinct int64 ids spread over a wide range (not 0..n-1, so hashing is exercised)."""
    ids = np.unique(rng.integers(0, 40 * n + 1000, size=int(n * 1.2) + 50))
    while ids.size < n:  # pragma: no cover - the draw is 1.2x oversized
        ids = np.unique(np.concatenate([ids, rng.integers(0, 40 * n + 1000, size=n)]))
    return (rng.permutation(ids)[:n] + offset).astype(np.int64)


def _text_pool(rng: np.random.Generator, n_words: int, on_topic: float) -> np.ndarray:
    """``[N_TOPICS * _POOL]`` strings: variant j of topic k is ``k * _POOL + j``."""
    words = np.asarray(ALL_WORDS, dtype=object)
    topic_words = np.asarray(TOPIC_WORDS, dtype=object)
    out = []
    for k in range(N_TOPICS):
        for _ in range(_POOL):
            w = [
                topic_words[k, rng.integers(0, 6)] if rng.random() < on_topic else words[rng.integers(0, len(words))]
                for _ in range(n_words)
            ]
            out.append(",".join(w))
    return np.asarray(out, dtype=object)


def _chunk(world: _World, rng: np.random.Generator, n: int, t0: float, t1: float) -> tuple[pa.Table, np.ndarray]:
    """``n`` rows with times in ``[t0, t1)`` seconds after START; also returns the times."""
    cfg = world.cfg
    test_start = (datetime(2023, 8, 5) - START).total_seconds()
    parts: list[dict[str, np.ndarray]] = []
    have = 0
    while have < n:
        m = max(1024, int((n - have) * (1.0 if cfg.negative_keep is None else 3.5)))
        times = np.floor(np.sort(rng.uniform(t0, t1, m)))  # whole seconds, as log_time prints them
        scene = rng.choice(5, size=m, p=world.traffic)
        in_test = times > test_start  # the test split is log_time > 2023-08-05 00:00:00
        users = np.empty(m, np.int64)
        items = np.empty(m, np.int64)
        for s in range(5):
            for tw in (False, True):
                sel = np.flatnonzero((scene == s) & (in_test == tw))
                if sel.size == 0:
                    continue
                items[sel] = world.scene_items[s][np.searchsorted(world.item_cdf[(s, tw)], rng.random(sel.size))]
                users[sel] = world.scene_users[s][np.searchsorted(world.user_cdf[(s, tw)], rng.random(sel.size))]
        hour = ((times % 86400) // 3600).astype(np.int64)
        p = 1.0 / (1.0 + np.exp(-world.logits(users, items, scene, hour)))
        if cfg.negative_keep is not None:
            r = cfg.negative_keep
            keep = rng.random(m) < p + r * (1 - p)
            p = p / (p + r * (1 - p))
            times, scene, users, items, hour, p = (a[keep] for a in (times, scene, users, items, hour, p))
        label = (rng.random(p.size) < p).astype(np.int64)
        parts.append(dict(times=times, scene=scene, users=users, items=items, hour=hour, p=p, label=label))
        have += p.size
    cols = {k: np.concatenate([d[k] for d in parts]) for k in parts[0]}
    if len(parts) > 1:  # keep time order across the refills
        order = np.argsort(cols["times"], kind="stable")
        cols = {k: v[order] for k, v in cols.items()}
    if cols["times"].size > n:  # thin uniformly over the whole window (never keep just the earliest rows)
        keep_rows = np.sort(rng.choice(cols["times"].size, size=n, replace=False))
        cols = {k: v[keep_rows] for k, v in cols.items()}
    users, items, scene = cols["users"], cols["items"], cols["scene"]

    stamps = (np.datetime64(START, "s") + cols["times"].astype("timedelta64[s]")).astype(str)
    log_time = pa.array(np.char.replace(stamps, "T", " "))
    ut = world.user_topics[users, rng.integers(0, 2, n)]
    seqs = [
        _dict_strings(pool, ut * _POOL + rng.integers(0, _POOL, n))
        for pool in world.seq_pools  # bill, service, query
    ]
    entity = _dict_strings(world.entity_pool, world.item_topic[items] * _POOL + rng.integers(0, _POOL, n))
    title = _dict_strings(world.titles, items)
    deep = [world.user_deep[users, j] for j in range(5)] + [world.item_deep[items, j] for j in range(5)]
    deep.append(cols["hour"])
    deep += [rng.integers(0, DEEP_CARDINALITIES[j], n) for j in range(11, 27)]
    arrays = [
        pa.array(world.user_ids[users]),
        pa.array(world.item_ids[items]),
        log_time,
        pa.array(cols["label"]),
        *seqs,
        entity,
        title,
        pa.array(scene.astype(np.int64)),
        *[pa.array(d.astype(np.int64)) for d in deep],
        pa.array(cols["p"].astype(np.float32)),
    ]
    return pa.Table.from_arrays(arrays, schema=public10m_arrow_schema()), cols["times"]


def _dict_strings(pool: np.ndarray, index: np.ndarray) -> pa.Array:
    """Strings ``pool[index]`` built without a Python loop per row (dictionary array, then cast)."""
    uniq, inv = np.unique(index, return_inverse=True)
    dictionary = pa.array(pool[uniq].tolist(), type=pa.string())
    return pa.DictionaryArray.from_arrays(pa.array(inv.astype(np.int32)), dictionary).cast(pa.string())


class _SplitWriter:
    """Rolls Parquet files of ``rows_per_file`` rows under ``root/split/``."""

    def __init__(self, root: Path, split: str, cfg: GeneratorConfig) -> None:
        self.dir = root / split
        self.dir.mkdir(parents=True, exist_ok=True)
        self.cfg = cfg
        self.files: list[Path] = []
        self.rows = 0
        self._writer: pq.ParquetWriter | None = None
        self._in_file = 0

    def write(self, table: pa.Table) -> None:
        while table.num_rows:
            if self._writer is None:
                path = self.dir / f"part-{len(self.files):05d}.parquet"
                self._writer = pq.ParquetWriter(path, table.schema, compression=self.cfg.compression)
                self.files.append(path)
                self._in_file = 0
            take = min(table.num_rows, self.cfg.rows_per_file - self._in_file)
            self._writer.write_table(table.slice(0, take), row_group_size=self.cfg.row_group_size)
            self._in_file += take
            self.rows += take
            table = table.slice(take)
            if self._in_file >= self.cfg.rows_per_file:
                self.close()

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def generate(out_dir: str | os.PathLike[str], config: GeneratorConfig | None = None, *, quiet: bool = True, **kw):
    """Write ``config.rows`` generated rows under ``out_dir/{train,val,test}/part-*.parquet``.

    Also writes ``item_vectors.safetensors`` (``item_id`` int64 ``[n_items]``, ``vectors`` float32
    ``[n_items, image_dim]``) and ``meta.json`` (the config and the row counts). Keyword arguments override
    fields of ``config``. Returns a :class:`GeneratedData`.
    """
    from safetensors.numpy import save_file

    cfg = config or GeneratorConfig()
    if kw:
        cfg = GeneratorConfig(**{**asdict(cfg), **kw})
    root = Path(out_dir)
    root.mkdir(parents=True, exist_ok=True)
    world = _World(cfg)
    train_end = (datetime(2023, 8, 3) - START).total_seconds()
    val_end = (datetime(2023, 8, 5) - START).total_seconds()
    writers = {s: _SplitWriter(root, s, cfg) for s in ("train", "val", "test")}
    total = DAYS * 86400.0
    n_chunks = math.ceil(cfg.rows / cfg.chunk_rows)
    try:
        for c in progress(range(n_chunks), desc="generate", unit="chunk", quiet=quiet):
            lo, hi = c * cfg.chunk_rows, min(cfg.rows, (c + 1) * cfg.chunk_rows)
            rng = np.random.default_rng([cfg.seed, 1, c])
            table, times = _chunk(world, rng, hi - lo, total * lo / cfg.rows, total * hi / cfg.rows)
            cut1, cut2 = np.searchsorted(times, [train_end, val_end], side="right")
            writers["train"].write(table.slice(0, cut1))
            writers["val"].write(table.slice(cut1, cut2 - cut1))
            writers["test"].write(table.slice(cut2))
    finally:
        for w in writers.values():
            w.close()
    vec_path = root / "item_vectors.safetensors"
    save_file({"item_id": world.item_ids, "vectors": world.image}, str(vec_path))
    rows = {s: w.rows for s, w in writers.items()}
    meta = {
        "generator": "bastion.ctr.generator",
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()},
        "rows": rows,
        "n_users": world.n_users,
        "n_items": world.n_items,
        "split": {"train_end": "2023-08-03 00:00:00", "val_end": "2023-08-05 00:00:00"},
        "start": START.strftime(TIME_FORMAT),
        "end": (START + timedelta(days=DAYS)).strftime(TIME_FORMAT),
    }
    (root / "meta.json").write_text(json.dumps(meta, indent=2))
    return GeneratedData(root, rows, {s: w.files for s, w in writers.items()}, vec_path, world.n_users, world.n_items)


#: The spec's bounds (section 5) on :func:`generator_checks` figures, inclusive: name -> (low, high).
CHECK_BOUNDS = {
    "ctr_gap_max": (0.0, 0.01),
    "traffic_gap_max": (0.0, 0.01),
    "zipf_slope_top1000": (-1.3, -0.9),
    "scenes_per_user": (2.0, 3.5),
    "oracle_auc_test": (0.80, 0.90),
    "cold_item_test_share": (0.15, 0.25),
}


def generator_checks(data: GeneratedData) -> dict[str, float]:
    """The spec's sanity figures of a generated set (reads it once; fine up to a few million rows).

    Returns per-scene CTR and its gap to the mean true probability, the Zipf slope of the top-1,000 items of
    the largest scene, mean scenes per user, the oracle test AUC and the cold-item share of test rows;
    :data:`CHECK_BOUNDS` holds the spec's bounds on them. Small sets miss some bounds (at 200K rows the Zipf
    slope of the top 1,000 items is steeper than -1.3 and fewer than 15% of test rows are cold items).
    """
    from .metrics import auc

    cols = ["user_id", "item_id", "scene", "label", "p_true"]
    tabs = {s: pa.concat_tables([pq.read_table(f, columns=cols) for f in data.split_files(s)]) for s in data.files}
    allt = pa.concat_tables(list(tabs.values()))
    scene = allt["scene"].to_numpy()
    label = allt["label"].to_numpy()
    p = allt["p_true"].to_numpy()
    out: dict[str, float] = {}
    gaps = []
    for s in range(5):
        m = scene == s
        out[f"ctr_scene{s}"] = float(label[m].mean())
        gaps.append(abs(label[m].mean() - p[m].mean()))
    out["ctr_gap_max"] = float(max(gaps))
    cfg_traffic = np.asarray(json.loads((data.root / "meta.json").read_text())["config"]["scene_traffic"], float)
    share = np.bincount(scene, minlength=5) / scene.size
    out["traffic_gap_max"] = float(np.abs(share - cfg_traffic / cfg_traffic.sum()).max())
    big = allt.filter(pa.compute.equal(allt["scene"], 2))["item_id"].to_numpy()
    counts = np.sort(np.unique(big, return_counts=True)[1])[::-1][:1000]
    r = np.arange(1, counts.size + 1)
    out["zipf_slope_top1000"] = float(np.polyfit(np.log(r), np.log(counts), 1)[0])
    us = np.unique(np.stack([allt["user_id"].to_numpy(), scene], 1), axis=0)
    out["scenes_per_user"] = float(np.unique(us[:, 0], return_counts=True)[1].mean())
    test = tabs["test"]
    out["oracle_auc_test"] = float(auc(test["label"].to_numpy(), test["p_true"].to_numpy()))
    train_items = np.unique(tabs["train"]["item_id"].to_numpy())
    out["cold_item_test_share"] = float((~np.isin(test["item_id"].to_numpy(), train_items)).mean())
    out["positive_share"] = float(label.mean())
    return out
