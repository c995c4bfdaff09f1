"""Detection data: one in-memory type, COCO / Pascal VOC / YOLO readers and writers, procedural scenes.

A :class:`DetectionDataset` holds images in ``[0, 1]`` (``N x C x H x W`` float32) and, per image, a
torchvision-style target dict: ``boxes`` float32 ``(K, 4)`` in ``xyxy`` pixels and ``labels`` int64
``(K,)`` in ``[0, len(classes))``. Labels are 0-based here; torchvision detectors reserve 0 for the
background, so their adapters shift by one.

File formats (images as 8-bit PNG next to the annotations, so a round trip is lossless for images
whose values are multiples of 1/255, as the scene generator makes them):

- COCO JSON: ``bbox = [x, y, w, h]``, ``category_id = label + 1`` (COCO's ids start at 1).
- Pascal VOC XML, one file per image, parsed with ``defusedxml`` (an entity bomb is refused); box
  corners written as exact decimals (not VOC's 1-based integers, so that nothing is rounded).
- YOLO txt: ``label cx cy w h`` normalised by the image size, 17 significant digits, and a
  ``classes.txt``.

Scenes (spec baddet.md, "Measured here"): 64 px images of four classes (disc, square, triangle,
cross) in random colours on smooth colour noise, 1-4 non-overlapping objects of 9-23 px, exact
boxes (the tight bounds of each drawn mask).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..core.checks import check_int
from ..data.errors import DataError, DataNotFoundError

__all__ = [
    "SCENE_CLASSES",
    "DetectionDataset",
    "check_targets",
    "read_coco",
    "read_voc",
    "read_yolo",
    "scenes",
    "write_coco",
    "write_voc",
    "write_yolo",
]

SCENE_CLASSES = ("disc", "square", "triangle", "cross")


def check_targets(images: torch.Tensor, targets: Sequence[dict], num_classes: int | None = None) -> None:
    """Raise ``ValueError`` naming the first bad item: image range / NaN, box outside or inverted, bad label.

    Vectorised over the whole batch; only a failure walks the items to name the first bad one.
    """
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or not images.is_floating_point():
        got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a float tensor (N, C, H, W), got {got}")
    if len(targets) != len(images):
        raise ValueError(f"targets must have one dict per image ({len(images)}), got {len(targets)}")
    h, w = images.shape[-2:]
    if len(images):
        lo, hi = (float(v) for v in torch.aminmax(images.detach()))
        if not (math.isfinite(lo) and math.isfinite(hi) and lo >= 0 and hi <= 1):
            for i, img in enumerate(images):
                if not torch.isfinite(img).all() or float(img.min()) < 0 or float(img.max()) > 1:
                    raise ValueError(
                        f"image {i} must lie in [0, 1] without NaN, got [{float(img.min()):g}, {float(img.max()):g}]"
                    )
    for i, t in enumerate(targets):
        if not isinstance(t, dict) or "boxes" not in t or "labels" not in t:
            raise ValueError(f"target {i} must be a dict with 'boxes' and 'labels'")
        boxes, labels = t["boxes"], t["labels"]
        if boxes.dim() != 2 or boxes.shape[1] != 4 or len(labels) != len(boxes):
            raise ValueError(
                f"target {i}: boxes must be (K, 4) with K labels, got {tuple(boxes.shape)} and {len(labels)}"
            )
        if labels.is_floating_point():
            raise ValueError(f"target {i}: labels must be integers, got {labels.dtype}")
    if not targets or sum(len(t["labels"]) for t in targets) == 0:
        return
    boxes = torch.cat([t["boxes"] for t in targets]).float()
    labels = torch.cat([t["labels"] for t in targets])
    owner = torch.repeat_interleave(torch.arange(len(targets)), torch.tensor([len(t["labels"]) for t in targets]))
    first = torch.cat(
        [torch.zeros(1, dtype=torch.long), torch.cumsum(torch.bincount(owner, minlength=len(targets)), 0)]
    )

    def where(mask: torch.Tensor) -> tuple[int, int]:
        j = int(mask.nonzero()[0])
        return int(owner[j]), j - int(first[owner[j]])

    if not bool(torch.isfinite(boxes).all()):
        i, k = where(~torch.isfinite(boxes).all(1))
        raise ValueError(f"target {i}, box {k} contains NaN or inf")
    bad = (boxes[:, 2] <= boxes[:, 0]) | (boxes[:, 3] <= boxes[:, 1])
    if bool(bad.any()):
        i, k = where(bad)
        raise ValueError(f"target {i}, box {k} is empty or inverted: {targets[i]['boxes'][k].tolist()} (xyxy)")
    out = (boxes[:, 0] < 0) | (boxes[:, 1] < 0) | (boxes[:, 2] > w) | (boxes[:, 3] > h)
    if bool(out.any()):
        i, k = where(out)
        raise ValueError(f"target {i}, box {k} {targets[i]['boxes'][k].tolist()} lies outside the {w}x{h} image")
    bad = (labels < 0) | ((labels >= num_classes) if num_classes else torch.zeros_like(labels, dtype=torch.bool))
    if bool(bad.any()):
        i, _ = where(bad)
        raise ValueError(
            f"target {i}: labels must be integers in [0, {num_classes}), got {targets[i]['labels'].tolist()}"
        )


@dataclass
class DetectionDataset:
    """Images in [0, 1] (N, C, H, W) and torchvision-style targets; checked on creation."""

    images: torch.Tensor
    targets: list[dict[str, torch.Tensor]]
    classes: tuple[str, ...]
    names: list[str] = field(default_factory=list)  # file stems, for writers

    def __post_init__(self) -> None:
        self.classes = tuple(self.classes)
        self.targets = [
            {"boxes": torch.as_tensor(t["boxes"], dtype=torch.float32).reshape(-1, 4),
             "labels": torch.as_tensor(t["labels"], dtype=torch.int64).reshape(-1)}
            for t in self.targets
        ]  # fmt: skip
        check_targets(self.images, self.targets, len(self.classes))
        if not self.names:
            self.names = [f"{i:06d}" for i in range(len(self.images))]
        if len(self.names) != len(self.images) or len(set(self.names)) != len(self.names):
            raise ValueError("names must be unique, one per image")

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.images[i], self.targets[i]


# ---------------------------------------------------------------------------------------------- images
def _save_png(img: torch.Tensor, path: Path) -> None:
    from PIL import Image

    arr = (img.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(arr[..., 0] if arr.shape[2] == 1 else arr).save(path)


def _load_png(path: Path) -> torch.Tensor:  # any format PIL reads; PNG is what the writers use
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise DataNotFoundError(f"image {path} is missing")
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im)
    except (UnidentifiedImageError, OSError) as exc:
        raise DataError(f"image {path} cannot be read: {exc}") from exc
    t = torch.from_numpy(arr.copy()).float() / 255
    return t[None] if t.dim() == 2 else t.permute(2, 0, 1)


def _stack(images: list[torch.Tensor], targets: list[dict], where: Path, size) -> torch.Tensor:
    """Stack the images; with ``size`` (an int or ``(height, width)``) resize each and scale its boxes."""
    if not images:
        raise DataError(f"{where} holds no images")
    if size is not None:
        h, w = (size, size) if isinstance(size, int) else tuple(size)
        for k, img in enumerate(images):
            sy, sx = h / img.shape[-2], w / img.shape[-1]
            images[k] = F.interpolate(img[None], size=(h, w), mode="bilinear", antialias=True,
                                      align_corners=False)[0].clamp(0, 1)  # fmt: skip
            targets[k]["boxes"] = targets[k]["boxes"] * torch.tensor([sx, sy, sx, sy])
    shapes = {tuple(i.shape) for i in images}
    if len(shapes) != 1:
        raise DataError(f"images under {where} differ in size {sorted(shapes)[:3]}; pass size= to resize them")
    return torch.stack(images)


# ---------------------------------------------------------------------------------------------- COCO
def write_coco(data: DetectionDataset, folder: str | Path) -> Path:
    """``folder/annotations.json`` and ``folder/images/NAME.png``."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    h, w = data.images.shape[-2:]
    anns, imgs = [], []
    for i, (img, t) in enumerate(zip(data.images, data.targets, strict=True)):
        _save_png(img, folder / "images" / f"{data.names[i]}.png")
        imgs.append({"id": i + 1, "file_name": f"{data.names[i]}.png", "width": int(w), "height": int(h)})
        for b, lab in zip(t["boxes"].double().tolist(), t["labels"].tolist(), strict=True):
            bw, bh = b[2] - b[0], b[3] - b[1]
            anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": lab + 1,
                         "bbox": [b[0], b[1], bw, bh], "area": bw * bh, "iscrowd": 0})  # fmt: skip
    cats = [{"id": k + 1, "name": n} for k, n in enumerate(data.classes)]
    path = folder / "annotations.json"
    path.write_text(json.dumps({"images": imgs, "annotations": anns, "categories": cats}))
    return path


def read_coco(path: str | Path, image_dir: str | Path | None = None, *, size=None) -> DetectionDataset:
    """Read a COCO detection JSON; images from ``image_dir`` (default: ``images/`` beside the JSON).

    ``size`` (an int or ``(height, width)``) resizes every image and scales its boxes; without it,
    images of different sizes are an error.
    """
    path = Path(path)
    if not path.is_file():
        raise DataNotFoundError(f"COCO annotations {path} are missing")
    try:
        doc = json.loads(path.read_text())
        cats = sorted(doc["categories"], key=lambda c: c["id"])
        cat_index = {c["id"]: k for k, c in enumerate(cats)}
        entries = doc["images"]
    except (ValueError, KeyError, TypeError) as exc:
        raise DataError(f"{path} is not COCO detection JSON: {exc!r}") from exc
    image_dir = Path(image_dir) if image_dir is not None else path.parent / "images"
    by_image: dict[int, list[dict]] = {e["id"]: [] for e in entries}
    for a in doc.get("annotations", []):
        if a.get("image_id") not in by_image or a.get("category_id") not in cat_index:
            raise DataError(f"{path}: annotation {a.get('id')} names an unknown image or category")
        by_image[a["image_id"]].append(a)
    images, targets = [], []
    for e in entries:
        images.append(_load_png(image_dir / e["file_name"]))
        anns = by_image[e["id"]]
        boxes = [[a["bbox"][0], a["bbox"][1], a["bbox"][0] + a["bbox"][2], a["bbox"][1] + a["bbox"][3]] for a in anns]
        labels = [cat_index[a["category_id"]] for a in anns]
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float64).float().reshape(-1, 4),
                        "labels": torch.tensor(labels, dtype=torch.int64)})  # fmt: skip
    names = [Path(e["file_name"]).stem for e in entries]
    return DetectionDataset(_stack(images, targets, image_dir, size), targets, tuple(c["name"] for c in cats), names)


# ---------------------------------------------------------------------------------------------- VOC
def write_voc(data: DetectionDataset, folder: str | Path) -> Path:
    """``folder/Annotations/NAME.xml``, ``folder/JPEGImages/NAME.png`` (PNG: lossless)."""
    from xml.sax.saxutils import escape

    folder = Path(folder)
    (folder / "Annotations").mkdir(parents=True, exist_ok=True)
    (folder / "JPEGImages").mkdir(parents=True, exist_ok=True)
    c, h, w = data.images.shape[1:]
    for name, img, t in zip(data.names, data.images, data.targets, strict=True):
        _save_png(img, folder / "JPEGImages" / f"{name}.png")
        objs = "".join(
            f"<object><name>{escape(data.classes[lab])}</name><difficult>0</difficult><bndbox>"
            f"<xmin>{b[0]!r}</xmin><ymin>{b[1]!r}</ymin><xmax>{b[2]!r}</xmax><ymax>{b[3]!r}</ymax></bndbox></object>"
            for b, lab in zip(t["boxes"].double().tolist(), t["labels"].tolist(), strict=True)
        )
        xml = (f"<annotation><filename>{escape(name)}.png</filename><size><width>{w}</width><height>{h}</height>"
               f"<depth>{c}</depth></size>{objs}</annotation>")  # fmt: skip
        (folder / "Annotations" / f"{name}.xml").write_text(xml)
    (folder / "classes.txt").write_text("\n".join(data.classes) + "\n")
    return folder


def read_voc(folder: str | Path, classes: Sequence[str] | None = None, *, size=None) -> DetectionDataset:
    """Read Pascal VOC XML (``Annotations/*.xml``, images in ``JPEGImages/``) with ``defusedxml``.

    ``classes`` fixes the label order; by default ``folder/classes.txt`` or the sorted names found.
    ``size`` resizes as in :func:`read_coco`.
    """
    import defusedxml.ElementTree as ET
    from defusedxml import DefusedXmlException

    folder = Path(folder)
    files = sorted((folder / "Annotations").glob("*.xml"))
    if not files:
        raise DataNotFoundError(f"no Pascal VOC annotations under {folder / 'Annotations'}")
    parsed = []
    for f in files:
        try:
            root = ET.parse(f).getroot()
            corners = ("xmin", "ymin", "xmax", "ymax")
            objs = [(o.findtext("name"), [float(o.find("bndbox").findtext(k)) for k in corners])
                    for o in root.iter("object")]  # fmt: skip
            fname = root.findtext("filename") or f"{f.stem}.png"
        except DefusedXmlException as exc:
            raise DataError(f"{f} was refused by the safe XML parser ({type(exc).__name__}: {exc})") from exc
        except (ET.ParseError, AttributeError, TypeError, ValueError) as exc:
            raise DataError(f"{f} is not a Pascal VOC annotation: {exc}") from exc
        parsed.append((f.stem, fname, objs))
    if classes is None:
        listed = folder / "classes.txt"
        classes = (listed.read_text().split("\n") if listed.is_file() else
                   sorted({n for _, _, objs in parsed for n, _ in objs}))  # fmt: skip
        classes = [c for c in classes if c]
    index = {c: k for k, c in enumerate(classes)}
    images, targets = [], []
    for stem, fname, objs in parsed:
        unknown = [n for n, _ in objs if n not in index]
        if unknown:
            raise DataError(f"{folder / 'Annotations' / (stem + '.xml')}: unknown class {unknown[0]!r}")
        images.append(_load_png(folder / "JPEGImages" / fname))
        targets.append({"boxes": torch.tensor([b for _, b in objs], dtype=torch.float64).float().reshape(-1, 4),
                        "labels": torch.tensor([index[n] for n, _ in objs], dtype=torch.int64)})  # fmt: skip
    return DetectionDataset(_stack(images, targets, folder, size), targets, tuple(classes), [p[0] for p in parsed])


# ---------------------------------------------------------------------------------------------- YOLO
def write_yolo(data: DetectionDataset, folder: str | Path) -> Path:
    """``folder/images/NAME.png``, ``folder/labels/NAME.txt`` (``label cx cy w h``, normalised), ``classes.txt``."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "labels").mkdir(parents=True, exist_ok=True)
    h, w = (float(s) for s in data.images.shape[-2:])
    for name, img, t in zip(data.names, data.images, data.targets, strict=True):
        _save_png(img, folder / "images" / f"{name}.png")
        lines = []
        for b, lab in zip(t["boxes"].double().tolist(), t["labels"].tolist(), strict=True):
            cx, cy, bw, bh = (b[0] + b[2]) / 2 / w, (b[1] + b[3]) / 2 / h, (b[2] - b[0]) / w, (b[3] - b[1]) / h
            lines.append(f"{lab} {cx:.17g} {cy:.17g} {bw:.17g} {bh:.17g}")
        (folder / "labels" / f"{name}.txt").write_text("".join(line + "\n" for line in lines))
    (folder / "classes.txt").write_text("\n".join(data.classes) + "\n")
    return folder


def read_yolo(folder: str | Path, classes: Sequence[str] | None = None, *, size=None) -> DetectionDataset:
    """Read YOLO txt labels (``labels/NAME.txt`` beside ``images/NAME.png``); classes from ``classes.txt``.

    ``size`` resizes as in :func:`read_coco`.
    """
    folder = Path(folder)
    files = sorted((folder / "labels").glob("*.txt"))
    if not files:
        raise DataNotFoundError(f"no YOLO label files under {folder / 'labels'}")
    if classes is None:
        listed = folder / "classes.txt"
        if not listed.is_file():
            raise DataNotFoundError(f"{listed} is missing; pass classes=")
        classes = [c for c in listed.read_text().split("\n") if c]
    images, targets = [], []
    for f in files:
        found = [folder / "images" / f"{f.stem}{ext}" for ext in (".png", ".jpg", ".jpeg", ".bmp")]
        img = _load_png(next((p for p in found if p.is_file()), found[0]))
        h, w = (float(s) for s in img.shape[-2:])
        boxes, labels = [], []
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if not line.strip():
                continue
            parts = line.split()
            try:
                lab, cx, cy, bw, bh = int(parts[0]), *(float(p) for p in parts[1:5])
                if len(parts) != 5:
                    raise ValueError("expected 5 fields")
            except (ValueError, IndexError) as exc:
                raise DataError(f"{f}, line {n}: {line!r} is not 'label cx cy w h' ({exc})") from exc
            boxes.append([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
            labels.append(lab)
        images.append(img)
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float64).float().reshape(-1, 4),
                        "labels": torch.tensor(labels, dtype=torch.int64)})  # fmt: skip
    return DetectionDataset(_stack(images, targets, folder, size), targets, tuple(classes), [f.stem for f in files])


# ---------------------------------------------------------------------------------------------- scenes
def _shape_mask(kind: int, size: int) -> np.ndarray:
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    c = size / 2
    if kind == 0:  # disc
        return (xx - c) ** 2 + (yy - c) ** 2 <= c**2
    if kind == 1:  # square
        return np.ones((size, size), dtype=bool)
    if kind == 2:  # triangle, apex up
        return np.abs(xx - c) <= yy / size * c
    bar = max(2, size // 3)  # cross
    lo = (size - bar) // 2
    m = np.zeros((size, size), dtype=bool)
    m[lo : lo + bar, :] = True
    m[:, lo : lo + bar] = True
    return m


def scenes(n: int, *, size: int = 64, seed: int = 0, max_objects: int = 4, min_side: int = 9,
           max_side: int = 23) -> DetectionDataset:  # fmt: skip
    """``n`` procedural RGB scenes with exact boxes (classes :data:`SCENE_CLASSES`); values are k/255."""
    n = check_int(n, "n", minimum=1)
    size = check_int(size, "size", minimum=max_side + 1)
    rng = np.random.default_rng(seed)
    images = np.empty((n, 3, size, size), dtype=np.float32)
    targets = []
    for i in range(n):
        low = rng.random((3, 4, 4)).astype(np.float32)
        bg = F.interpolate(torch.from_numpy(low)[None], size=(size, size), mode="bicubic", align_corners=False)[0]
        img = (0.25 + 0.5 * bg.clamp(0, 1)).numpy()
        taken = np.zeros((size, size), dtype=bool)
        boxes, labels = [], []
        for _ in range(int(rng.integers(1, max_objects + 1))):
            for _attempt in range(20):
                side = int(rng.integers(min_side, max_side + 1))
                x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, size=2))
                kind = int(rng.integers(0, len(SCENE_CLASSES)))
                mask = _shape_mask(kind, side)
                region = taken[y0 : y0 + side, x0 : x0 + side]
                if (region & mask).any() or taken[max(0, y0 - 1) : y0 + side + 1, max(0, x0 - 1) : x0 + side + 1].any():
                    continue
                colour = rng.random(3).astype(np.float32)
                for ch in range(3):
                    img[ch, y0 : y0 + side, x0 : x0 + side][mask] = colour[ch]
                taken[y0 : y0 + side, x0 : x0 + side] |= mask
                ys, xs = np.nonzero(mask)
                boxes.append([x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1])
                labels.append(kind)
                break
        images[i] = np.round(img * 255) / 255
        targets.append({"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                        "labels": torch.tensor(labels, dtype=torch.int64)})  # fmt: skip
    return DetectionDataset(torch.from_numpy(images), targets, SCENE_CLASSES)
