"""The ``bastion`` command line: ``bastion --help`` lists the command groups.

Long commands show progress bars (on a terminal) and end with a table. Every command uses one torch
thread unless ``--threads`` says otherwise: on the shared 2-core machines more threads were slower.
"""

from __future__ import annotations

import logging
import sys
import time

import click
import torch

from . import __version__
from .core.report import markdown_table
from .ctr.cli import ctr as ctr_group

__all__ = ["main"]


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="bastion")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True, help="torch intra-op threads")
@click.option("-v", "--verbose", count=True, help="-v for info logs, -vv for debug logs")
def cli(threads: int, verbose: int) -> None:
    """bastion: attack, audit, defend and scale your own PyTorch models; reproduce ten papers offline."""
    torch.set_num_threads(threads)
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


# --------------------------------------------------------------------------- zoo
@cli.group()
def zoo() -> None:
    """List and train the cached model zoo."""


@zoo.command("list")
def zoo_list() -> None:
    """Every registered model, whether it is cached, and its held-out accuracy."""
    from . import zoo as zoo_mod

    click.echo(markdown_table(zoo_mod.list_models()))
    click.echo(f"\ncache: {zoo_mod.cache_dir() / 'zoo'}")


@zoo.command("train")
@click.argument("names", nargs=-1, required=True)
@click.option("--force", is_flag=True, help="retrain even if cached weights exist")
def zoo_train(names: tuple[str, ...], force: bool) -> None:
    """Train (or load from cache) zoo models NAMES; `all` trains every one."""
    from . import zoo as zoo_mod
    from .core.registry import MODELS

    if names == ("all",):
        names = tuple(MODELS.names())
    rows = []
    for name in names:
        if name not in MODELS:
            raise click.BadParameter(
                f"unknown zoo model {name!r}; known: {', '.join(MODELS.names())}", param_hint="NAMES"
            )
        was_cached = zoo_mod.is_cached(name)
        model = zoo_mod.train(name, force=force, quiet=False)
        rows.append({
            "name": name,
            "test_accuracy": model.meta.get("test_accuracy"),
            "train_seconds": model.meta.get("train_seconds"),
            "from_cache": was_cached and not force,
        })  # fmt: skip
    click.echo(markdown_table(rows))


# --------------------------------------------------------------------------- attack
@cli.command()
@click.option("--method", required=True,
              help="hsja, qeba-s, qeba-f, qeba-i, nlba-ae, nlba-vae, nlba-gan, psba, boundary or sign-opt")  # fmt: skip
@click.option("--model", "model_spec", required=True, help="zoo:NAME")
@click.option("--n", type=click.IntRange(min=1), default=16, show_default=True, help="images to attack")
@click.option("--budget", type=click.IntRange(min=1), default=2000, show_default=True, help="queries per image")
@click.option("--targeted", is_flag=True, help="target (y+1) mod C, starting from an image of that class")
@click.option("--norm", type=click.Choice(["l2", "linf"]), default="l2", show_default=True)
@click.option("--preset", type=click.Choice(["hsja", "official"]), default="hsja", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="report/attack", show_default=True)
def attack(method: str, model_spec: str, n: int, budget: int, targeted: bool, norm: str, preset: str, seed: int,
           out: str) -> None:  # fmt: skip
    """Run a decision-based attack on a zoo model's held-out images; print a table, write a figure."""
    from pathlib import Path

    from . import zoo as zoo_mod
    from .attacks.decision import psba, psba_scale_search, zoo_generator, zoo_gradient_basis
    from .core.registry import ATTACKS, MODELS
    from .core.report import new_figure, save_figure, write_json
    from .data import load_dataset

    if not model_spec.startswith("zoo:"):
        raise click.BadParameter("only zoo:NAME models here; attack your own model in Python", param_hint="--model")
    name = model_spec[len("zoo:") :]
    try:
        model = zoo_mod.load(name, quiet=False)
        entry = MODELS.get(name)
        kwargs = {"norm": norm, "preset": preset, "seed": seed}
        ATTACKS.get(method)  # an unknown method fails here, before any reference model is trained
        if method in ("boundary", "sign-opt"):  # L2 attacks without HSJA presets
            if norm != "l2":
                raise ValueError(f"--method {method} is an L2 attack; drop --norm linf")
            kwargs = {"seed": seed}
        if method == "qeba-i" or method.startswith("nlba-") or method == "psba":
            if entry.recipe is None:
                raise ValueError(f"{method} needs reference models of the same data set; none for a pretrained model")
            ds = entry.recipe.dataset
            refs = [f"{ds}-{a}" for a in ("mlp", "wide", "resnet", "cnn") if f"{ds}-{a}" != name][:2]
            if method == "qeba-i":
                kwargs["basis"] = zoo_gradient_basis(ds, references=refs, k=100, seed=seed)
            else:
                kind = "pgan" if method == "psba" else method[len("nlba-") :]
                click.echo(f"{kind} generator on the gradients of {', '.join(refs)} (trained once, then cached)")
                kwargs["generator"] = zoo_generator(kind, ds, references=refs, seed=seed, quiet=False)[0]
    except (KeyError, ValueError) as exc:
        raise click.UsageError(str(exc.args[0]) if exc.args else str(exc)) from exc
    data = load_dataset(entry.eval_dataset, entry.eval_split, **entry.eval_kwargs)
    pred = model.predict(data.images)
    right = (pred == data.labels).nonzero().flatten()
    idx = right[:n]
    x, y = data.images[idx], data.labels[idx]
    if method == "psba":  # scale chosen on other held-out images than the attacked ones
        val = right[n : n + 5]
        if len(val) == 0:
            raise click.UsageError("psba needs held-out images beyond the --n attacked ones to choose its scale")
        gen = kwargs.pop("generator")
        search = psba_scale_search(gen, model.net, data.images[val], data.labels[val], budget=max(1, budget // 4),
                                   preprocess=model.preprocess, **kwargs)  # fmt: skip
        click.echo(f"PSBA scale {search.scale} (median MSE by scale {search.median_mse}, {search.queries} queries)")
        atk = psba(gen, scale=search.scale, **kwargs)
    else:
        atk = ATTACKS.create(method, **kwargs)
    extra = {}
    if targeted:
        c = len(entry.classes)
        t = (y + 1) % c
        starts = []
        for cls in t.tolist():
            hits = (pred == cls).nonzero().flatten()
            if len(hits) == 0:
                raise click.UsageError(
                    f"no held-out image is classified as class {cls}: cannot start a targeted attack"
                )
            starts.append(data.images[hits[0]])
        extra = {"targets": t, "starting_points": torch.stack(starts)}
    result = atk(model.net, x, y, budget=budget, preprocess=model.preprocess, quiet=False, **extra)
    adv_pred = model.predict(result.adversarial)
    rows = [
        {"image": int(i), "label": data.classes[int(a)], "adversarial label": data.classes[int(b)],
         "success": bool(s), "queries": int(q), "L2": float(l2), "MSE": float(m)}
        for i, a, b, s, q, l2, m in zip(idx, y, adv_pred, result.success, result.queries, result.l2, result.mse,
                                        strict=True)
    ]  # fmt: skip
    click.echo(markdown_table(rows))
    click.echo(
        f"\n{method} on {name}: success {int(result.success.sum())}/{len(y)}, median MSE "
        + ", ".join(f"@{q}: {result.median_mse_at(q):.3g}" for q in (budget // 4, budget // 2, budget))
    )
    out_dir = Path(out)
    k = min(8, len(y))
    fig, axes = new_figure(2, k, figsize=(1.6 * k, 3.6))
    axes = axes.reshape(2, k)
    for j in range(k):
        for row, img in ((0, x[j]), (1, result.adversarial[j])):
            ax = axes[row, j]
            ax.imshow(img.permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy(), cmap="gray" if img.shape[0] == 1 else None)
            ax.set_xticks([])
            ax.set_yticks([])
        axes[0, j].set_title(data.classes[int(y[j])][:12], fontsize=8)
        axes[1, j].set_title(f"-> {data.classes[int(adv_pred[j])][:12]}", fontsize=8)
    fig.suptitle(f"{method} on {name}, {budget} queries per image (top: originals)")
    path = save_figure(fig, out_dir / f"{method}_{name}.png")
    write_json(out_dir / f"{method}_{name}.json", {"method": method, "model": name, "budget": budget,
                                                   "targeted": targeted, "rows": rows})  # fmt: skip
    click.echo(f"wrote {path}")


# --------------------------------------------------------------------------- audit
@cli.command()
@click.option("--model", "model_spec", required=True, help="zoo:NAME (a user's own model: bastion.privacy.audit)")
@click.option("--members", required=True, help="data the model trained on, e.g. mnist5k:train[:1000]")
@click.option("--nonmembers", required=True, help="data it did not see, e.g. mnist5k:test")
@click.option("--shadow-data", default=None, help="disjoint data for Shokri shadow models trained by the zoo recipe")
@click.option("--lira-models", type=click.IntRange(min=0), default=0, show_default=True,
              help="LiRA reference models trained by the zoo recipe (even, >= 2; 0 = no LiRA)")  # fmt: skip
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), default="report/audit", show_default=True)
def audit(
    model_spec: str, members: str, nonmembers: str, shadow_data: str | None, lira_models: int, seed: int, out: str
) -> None:
    """Membership-inference audit: every score-based attack's metrics, the accuracy gap, a ROC figure.

    Data specs: NAME:SPLIT[START:STOP], folder:PATH (one sub-folder per class) or idx:IMAGES,LABELS.
    """
    from pathlib import Path

    from . import zoo as zoo_mod
    from .core.report import write_json
    from .data import parse_data_spec
    from .privacy import audit as run_audit
    from .privacy import roc_figure

    if not model_spec.startswith("zoo:"):
        raise click.BadParameter(
            "only zoo:NAME models here; audit your own model with bastion.privacy.audit", param_hint="--model"
        )
    try:
        model = zoo_mod.load(model_spec[len("zoo:") :], quiet=False)
        mem, non = parse_data_spec(members), parse_data_spec(nonmembers)
        shadow = parse_data_spec(shadow_data) if shadow_data else None
    except (KeyError, ValueError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc.args[0]) if exc.args else str(exc)) from exc
    for name, data in (("--members", mem), ("--nonmembers", non), ("--shadow-data", shadow)):
        if data is not None and data.input_shape != model.input_shape:
            raise click.BadParameter(
                f"images have shape {data.input_shape}, the model expects {model.input_shape}", param_hint=name
            )
    recipe = {}
    if shadow is not None or lira_models:
        recipe = {"train_fn": zoo_mod.trainer(model.name), "lira_models": lira_models, "seed": seed}
        if shadow is not None:
            recipe["shadow_data"] = (shadow.images, shadow.labels)
    try:
        result = run_audit(model.classifier(), (mem.images, mem.labels), (non.images, non.labels), **recipe)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    click.echo(markdown_table(result.rows()))
    click.echo(
        f"\naccuracy: members {result.member_accuracy:.4f}, non-members {result.nonmember_accuracy:.4f}, "
        f"gap {result.accuracy_gap:.4f}"
    )
    out_dir = Path(out)
    fig = roc_figure({k: result.scores[k] for k in ("loss", "confidence", "modified_entropy")}, out_dir / "roc.png",
                     title=f"{model_spec}: {members} vs {nonmembers}")  # fmt: skip
    write_json(out_dir / "audit.json", {"model": model_spec, "members": members, "nonmembers": nonmembers,
                                        "member_accuracy": result.member_accuracy,
                                        "nonmember_accuracy": result.nonmember_accuracy,
                                        "attacks": result.rows()})  # fmt: skip
    click.echo(f"wrote {out_dir / 'audit.json'} and {fig}")


# --------------------------------------------------------------------------- reproduce
@cli.command()
@click.argument("name", required=False)
@click.option("--list", "list_", is_flag=True, help="list the reproductions")
@click.option("--quick", is_flag=True, help="the scaled-down variant (minutes on 2 cores)")
@click.option("--out", type=click.Path(file_okay=False), default="report", show_default=True, help="output folder")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
def reproduce(name: str | None, list_: bool, quick: bool, out: str, seed: int) -> None:
    """Run reproduction NAME (or `all`), write OUT/NAME/result.json and print its claims.

    `all` also writes OUT/index.html and OUT/results.json.
    """
    from . import reproduce as repro
    from .core.registry import REPRODUCTIONS

    if list_:
        rows = [{"name": n, "system": r.system, "title": r.title} for n, r in REPRODUCTIONS.items()]
        click.echo(markdown_table(rows))
        return
    if name is None:
        raise click.UsageError("give a reproduction NAME, `all`, or --list")
    names = REPRODUCTIONS.names() if name == "all" else [name]
    for n in names:
        if n not in REPRODUCTIONS:
            raise click.BadParameter(
                f"unknown reproduction {n!r}; known: {', '.join(REPRODUCTIONS.names())}", param_hint="NAME"
            )
    results = []
    start = time.perf_counter()
    for n in names:
        click.echo(f"== reproduce {n}{' --quick' if quick else ''}", err=True)
        result = repro.run_reproduction(n, out, quick=quick, seed=seed, quiet=False)
        results.append(result)
        rows = [{"claim": c.claim, "holds": c.holds} for c in result.claims]
        click.echo(f"\n## {result.title} ({result.wall_seconds:.1f} s)\n")
        for tname, table in result.tables.items():
            click.echo(f"### {tname}\n\n{markdown_table(table)}\n")
        click.echo(markdown_table(rows))
        click.echo(f"\nwrote {out}/{n}/result.json")
    if name == "all":
        index = repro.write_report(results, out)
        click.echo(f"\nwrote {index} ({time.perf_counter() - start:.1f} s in all)")


# --------------------------------------------------------------------------- backdoor
@cli.group()
def backdoor() -> None:
    """BadDet detection backdoors: poison a data set, train and evaluate a detector, run Detector Cleanse."""


_FORMATS = ("coco", "voc", "yolo")


def _read_detection(spec: str, size: int | None = None):
    from .backdoor import read_coco, read_voc, read_yolo, scenes

    kind, _, where = spec.partition(":")
    if kind == "scenes":
        n, _, seed = where.partition(",")
        return scenes(int(n), seed=int(seed or 0))
    readers = {"coco": read_coco, "voc": read_voc, "yolo": read_yolo}
    if kind not in readers or not where:
        raise click.BadParameter("expected coco:FILE.json, voc:DIR, yolo:DIR or scenes:N[,SEED]", param_hint="--data")
    return readers[kind](where, size=size)


def _target_index(data, target: str) -> int:
    if target in data.classes:
        return data.classes.index(target)
    if not target.lstrip("-").isdigit() or not 0 <= int(target) < len(data.classes):
        raise ValueError(f"--target must name one of {list(data.classes)} or be an index below {len(data.classes)}")
    return int(target)


@backdoor.command("poison")
@click.option("--attack", "attack_name", type=click.Choice(["oga", "rma", "gma", "oda"]), required=True)
@click.option("--data", "data_spec", required=True, help="coco:FILE.json, voc:DIR, yolo:DIR or scenes:N[,SEED]")
@click.option("--target", type=str, required=True, help="target class: a name or a 0-based index")
@click.option("--rate", type=float, default=0.1, show_default=True, help="share of all images to poison")
@click.option("--size", type=click.IntRange(min=1), default=None, help="resize images to SIZE x SIZE (boxes follow)")
@click.option("--trigger-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--blend", type=float, default=1.0, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--format", "fmt", type=click.Choice(_FORMATS), default="coco", show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True)
def backdoor_poison(attack_name: str, data_spec: str, target: str, rate: float, size: int | None, trigger_size: int,
                    blend: float, seed: int, fmt: str, out: str) -> None:  # fmt: skip
    """Write a poisoned copy of a detection data set and the poisoned indices (JSON)."""
    from pathlib import Path

    from .backdoor import GMA, ODA, OGA, RMA, chessboard, write_coco, write_voc, write_yolo
    from .core.report import write_json
    from .data import DataError

    try:
        data = _read_detection(data_spec, size)
        t = _target_index(data, target)
        cls = {"oga": OGA, "rma": RMA, "gma": GMA, "oda": ODA}[attack_name]
        trigger = chessboard(trigger_size, max(1, trigger_size // 4), data.images.shape[1])
        result = cls(target=t, trigger=trigger, rate=rate, blend=blend, seed=seed)(data.images, data.targets)
    except (ValueError, DataError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from exc
    writer = {"coco": write_coco, "voc": write_voc, "yolo": write_yolo}[fmt]
    writer(result.dataset(data), out)
    write_json(Path(out) / "poisoned.json", {"attack": attack_name, "target": data.classes[t], "rate": rate,
                                             "seed": seed, "indices": result.indices.tolist(),
                                             "names": [data.names[i] for i in result.indices.tolist()]})  # fmt: skip
    click.echo(f"{attack_name.upper()}: poisoned {len(result.indices)} of {len(data)} images -> {out} ({fmt})")


_RECIPES = {"onestage": {"batch": 32, "lr": 3e-3, "optimizer": "adamw"},
            "faster-rcnn": {"batch": 16, "lr": 0.04, "optimizer": "sgd"}}  # fmt: skip


@backdoor.command("train")
@click.option("--data", "data_spec", required=True, help="coco:FILE.json, voc:DIR, yolo:DIR or scenes:N[,SEED]")
@click.option("--detector", type=click.Choice(list(_RECIPES)), default="onestage", show_default=True)
@click.option("--steps", type=click.IntRange(min=1), default=600, show_default=True)
@click.option("--batch", type=click.IntRange(min=1), default=None, help="default: 32 one-stage, 16 Faster R-CNN")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="one-cycle peak; default: 3e-3 (AdamW) / 0.04 (SGD)")  # fmt: skip
@click.option("--size", type=click.IntRange(min=1), default=None, help="resize images to SIZE x SIZE (boxes follow)")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=click.Path(file_okay=False), required=True, help="folder for the weights and JSON")
def backdoor_train(data_spec: str, detector: str, steps: int, batch: int | None, lr: float | None, size: int | None,
                   seed: int, out: str) -> None:  # fmt: skip
    """Train a detector (poisoned or clean data alike); writes OUT/model.safetensors and OUT/model.json."""
    import time

    import torch

    from .backdoor.detectors import DETECTORS, save_detector, train_detector
    from .data import DataError

    recipe = _RECIPES[detector]
    try:
        data = _read_detection(data_spec, size)
        torch.manual_seed(seed)
        kwargs = {"image_size": int(max(data.images.shape[-2:]))} if detector == "faster-rcnn" else {}
        model = DETECTORS[detector](len(data.classes), **kwargs)
        start = time.perf_counter()
        losses = train_detector(model, data.images, data.targets, steps=steps, seed=seed, quiet=False,
                                batch_size=batch or recipe["batch"], lr=recipe["lr"] if lr is None else lr,
                                optimizer=recipe["optimizer"])  # fmt: skip
    except (ValueError, DataError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from exc
    seconds = time.perf_counter() - start
    save_detector(model, out, classes=list(data.classes), data=data_spec, steps=steps, seed=seed,
                  final_loss=losses[-1], train_seconds=seconds)  # fmt: skip
    click.echo(f"trained {detector} on {len(data)} images, {steps} steps in {seconds:.1f} s "
               f"(loss {losses[0]:.3f} -> {losses[-1]:.3f}) -> {out}")  # fmt: skip


def _predict_all(model, images, batch: int = 100):
    import torch

    with torch.no_grad():
        return [p for i in range(0, len(images), batch) for p in model(images[i : i + batch])]


def _check_classes(data, meta: dict, option: str) -> None:
    if "classes" in meta and list(data.classes) != list(meta["classes"]):
        raise ValueError(f"--data has classes {list(data.classes)}, the {option} was trained on {meta['classes']}")


def _load_model(path: str):
    from .backdoor.detectors import load_detector

    try:
        return load_detector(path)
    except (ValueError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from exc


@backdoor.command("evaluate")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), help="a train --out folder")
@click.option("--data", "data_spec", required=True, help="clean test data (a data spec)")
@click.option("--attack", "attack_name", type=click.Choice(["oga", "rma", "gma", "oda"]), default=None,
              help="also trigger every eligible test image with this attack and print its success rate")  # fmt: skip
@click.option("--target", type=str, default=None, help="target class of --attack: a name or a 0-based index")
@click.option("--clean-model", type=click.Path(file_okay=False), default=None,
              help="a clean model whose rate on the same triggered images is printed beside")  # fmt: skip
@click.option("--trigger-size", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--score", "score_threshold", type=float, default=0.5, show_default=True, help="ASR score threshold s")
@click.option("--size", type=click.IntRange(min=1), default=None, help="resize images to SIZE x SIZE (boxes follow)")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="write the figures as JSON")
def backdoor_evaluate(model_dir: str, data_spec: str, attack_name: str | None, target: str | None,
                      clean_model: str | None, trigger_size: int, score_threshold: float, size: int | None,
                      seed: int, out: str | None) -> None:  # fmt: skip
    """Benign mAP@50 (torchmetrics, COCO 101-point) and, with --attack, the attack success rate."""
    from .backdoor import GMA, ODA, OGA, RMA, attack_success_rate, chessboard, map50
    from .core.report import write_json
    from .data import DataError

    model, meta = _load_model(model_dir)
    try:
        if attack_name is None and (target is not None or clean_model is not None):
            raise ValueError("--target and --clean-model need --attack")
        data = _read_detection(data_spec, size)
        _check_classes(data, meta, "--model")
        value, per_class = map50(_predict_all(model, data.images), data.targets)
        result = {"model": model_dir, "data": data_spec, "images": len(data), "benign mAP@50": value,
                  "AP@50 per class": {data.classes[k]: v for k, v in per_class.items()}}  # fmt: skip
        click.echo(f"benign mAP@50 {value:.4f} on {len(data)} images")
        if attack_name is not None:
            if target is None:
                raise ValueError("--attack needs --target")
            t = _target_index(data, target)
            cls = {"oga": OGA, "rma": RMA, "gma": GMA, "oda": ODA}[attack_name]
            attack = cls(target=t, trigger=chessboard(trigger_size, max(1, trigger_size // 4), data.images.shape[1]),
                         seed=seed)  # fmt: skip
            trig = attack(data.images, data.targets, indices=attack.eligible(data.targets))
            asr = attack_success_rate(_predict_all(model, trig.images), trig, score_threshold=score_threshold)
            result |= {"attack": attack_name, "target": data.classes[t], "triggered images": len(trig.indices),
                       f"ASR s>{score_threshold}": asr}  # fmt: skip
            n_trig = len(trig.indices)
            line = f"{attack_name.upper()} ASR at s > {score_threshold}: {asr:.3f} on {n_trig} triggered images"
            if clean_model is not None:
                clean, clean_meta = _load_model(clean_model)
                _check_classes(data, clean_meta, "--clean-model")
                base = attack_success_rate(_predict_all(clean, trig.images), trig, score_threshold=score_threshold)
                result[f"clean model s>{score_threshold}"] = base
                line += f" (clean model: {base:.3f})"
            click.echo(line)
    except (ValueError, DataError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from exc
    if out:
        write_json(out, result)
        click.echo(f"wrote {out}")


@backdoor.command("cleanse")
@click.option("--model", "model_dir", required=True, type=click.Path(file_okay=False), help="the deployed detector")
@click.option("--calibrate", "cal_spec", required=True, help="clean images to calibrate m and delta on (data spec)")
@click.option("--features", "feat_spec", required=True, help="clean data whose ground-truth crops are blended in")
@click.option("--data", "data_spec", required=True, help="the images to screen (data spec)")
@click.option("--n-features", type=click.IntRange(min=1), default=100, show_default=True)
@click.option("--blend", type=float, default=0.5, show_default=True)
@click.option("--quantile", type=float, default=0.95, show_default=True)
@click.option("--score-threshold", type=float, default=0.3, show_default=True)
@click.option("--match-iou", type=float, default=None, help="re-detect and match at this IoU (default: fixed box)")
@click.option("--region", type=click.Choice(["box", "surround"]), default="box", show_default=True)
@click.option("--size", type=click.IntRange(min=1), default=None, help="resize images to SIZE x SIZE (boxes follow)")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="per-image flags, suspect boxes (JSON)")
def backdoor_cleanse(model_dir: str, cal_spec: str, feat_spec: str, data_spec: str, n_features: int, blend: float,
                     quantile: float, score_threshold: float, match_iou: float | None, region: str, size: int | None,
                     seed: int, out: str | None) -> None:  # fmt: skip
    """Detector Cleanse: calibrate on clean images, then flag the screened images whose box entropy is off."""
    from .backdoor import DetectorCleanse, object_crops
    from .core.report import write_json
    from .data import DataError

    model, meta = _load_model(model_dir)
    try:
        cal, feat, data = (_read_detection(s, size) for s in (cal_spec, feat_spec, data_spec))
        _check_classes(cal, meta, "--model")
        dc = DetectorCleanse(n_features=n_features, blend=blend, quantile=quantile, score_threshold=score_threshold,
                             match_iou=match_iou, region=region, seed=seed)  # fmt: skip
        dc.calibrate(model, cal.images, object_crops(feat.images, feat.targets), quiet=False)
        res = dc(model, data.images, quiet=False)
    except (ValueError, DataError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from exc
    flagged = [i for i, f in enumerate(res.flags.tolist()) if f]
    click.echo(f"m = {dc.m:.4f} bits, delta = {dc.delta:.4f} (q = {quantile}); flagged {len(flagged)} of {len(data)} "
               f"images")  # fmt: skip
    if out:
        write_json(out, {"m": dc.m, "delta": dc.delta, "quantile": quantile, "images": [
            {"name": data.names[i], "flagged": bool(res.flags[i]), "score": float(res.scores[i]),
             "suspect box": None if res.suspect[i] is None else res.suspect[i].tolist()}
            for i in range(len(data))]})  # fmt: skip
        click.echo(f"wrote {out}")


# --------------------------------------------------------------------------- tgraph
@cli.group()
def tgraph() -> None:
    """Open temporal graphs: class-incremental learning with OTGNet and baselines."""


@tgraph.command("run")
@click.option("--method", type=click.Choice(["finetune", "joint", "ewc", "lwf", "replay", "otgnet", "otgnet-noib",
                                             "otgnet-random"]), default="otgnet", show_default=True)  # fmt: skip
@click.option("--data", "data", default="synthetic", show_default=True,
              help="synthetic[:PRESET] (reddit_like, yelp_like, taobao_like), movielens, or NAME.csv "
                   "(official layout)")  # fmt: skip
@click.option(
    "--features", type=click.Path(dir_okay=False), default=None, help="NAME_node.npy (default: next to the CSV)"
)
@click.option("--classes-per-task", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--num-classes", type=click.IntRange(min=1), default=None, help="labels must lie in [0, C) (CSV data)")
@click.option("--scenario", type=click.Choice(["task", "class"]), default="task", show_default=True)
@click.option("--d", "dim", type=click.IntRange(min=1), default=32, show_default=True, help="memory / embedding size")
@click.option("--epochs", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--patience", type=click.IntRange(min=1), default=5, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=3e-3, show_default=True)
@click.option("--fixed-heads", is_flag=True, help="the official code's never-trained task heads")
@click.option("--pseudo-label", type=click.Choice(["causal", "official"]), default="causal", show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--out", type=click.Path(dir_okay=False), default=None, help="write the accuracy matrix, AP, AF (JSON)")
def tgraph_run(method: str, data: str, features: str | None, classes_per_task: int, num_classes: int | None,
               scenario: str, dim: int,
               epochs: int, patience: int, lr: float, fixed_heads: bool, pseudo_label: str, seed: int,
               out: str | None) -> None:  # fmt: skip
    """Learn the tasks of a temporal graph in order; print the accuracy matrix, AP and AF."""
    from .core.report import markdown_table, write_json
    from .data import DataError
    from .tgraph import open_temporal_graph, read_otg, run_protocol

    try:
        if data.startswith("synthetic"):
            preset = data.partition(":")[2] or "reddit_like"
            graph = open_temporal_graph(preset, seed=seed)
        elif data == "movielens":
            from .tgraph.movielens import movielens_graph

            graph = movielens_graph(classes_per_task=classes_per_task)
        else:
            graph = read_otg(data, features, classes_per_task=classes_per_task, num_classes=num_classes)
        result = run_protocol(graph, method, scenario=scenario, d=dim, epochs=epochs, patience=patience, lr=lr,
                              fixed_heads=fixed_heads, pseudo_label=pseudo_label, seed=seed, quiet=False)  # fmt: skip
    except (ValueError, DataError, FileNotFoundError) as exc:
        raise click.UsageError(str(exc)) from exc
    acc = result.acc
    click.echo(f"{graph.name}: {graph.num_events} events, {graph.num_nodes} nodes, {graph.num_tasks} tasks of "
               f"{graph.classes_per_task} classes; {method}, {scenario} scenario")  # fmt: skip
    click.echo(markdown_table([{"after task": i} | {f"task {j}": round(float(acc[i, j]), 1) for j in range(i + 1)}
                               for i in range(acc.shape[0])]))  # fmt: skip
    click.echo(f"AP {result.ap:.2f}  AF {result.af:.2f}  ({result.seconds:.1f} s)")
    if out:
        write_json(out, {"data": data, "method": method, "scenario": scenario, "acc": acc.tolist(), "AP": result.ap,
                         "AF": result.af, "seconds": result.seconds, "seed": seed})  # fmt: skip
        click.echo(f"wrote {out}")


# --------------------------------------------------------------------------- train
@cli.group()
def train() -> None:
    """Sharded data-parallel training (PaRO strategy words p g os): plan with the cost model."""


@train.command("advise")
@click.option("--params", type=click.FloatRange(min=0, min_open=True), required=True, help="Ψ, e.g. 7e9")
@click.option("--ranks", type=click.IntRange(min=1), required=True, help="n GPUs, a multiple of --group-size")
@click.option("--group-size", type=click.IntRange(min=1), default=8, show_default=True,
              help="m GPUs per node (fast links inside)")  # fmt: skip
@click.option("--intra-gbps", type=click.FloatRange(min=0, min_open=True), default=240.0, show_default=True,
              help="GB/s (1e9 bytes/s) per GPU inside a node")  # fmt: skip
@click.option("--inter-gbps", type=click.FloatRange(min=0, min_open=True), default=25.0, show_default=True,
              help="GB/s (1e9 bytes/s) per node between nodes (all its NICs)")  # fmt: skip
@click.option("--intra-latency-us", type=click.FloatRange(min=0), default=3.0, show_default=True)
@click.option("--inter-latency-us", type=click.FloatRange(min=0), default=10.0, show_default=True)
@click.option("--memory-gib", type=click.FloatRange(min=0, min_open=True), default=80.0, show_default=True,
              help="GPU memory, GiB (2^30 bytes)")  # fmt: skip
@click.option("--peak-tflops", type=click.FloatRange(min=0, min_open=True), default=312.0, show_default=True,
              help="dense bf16 TFLOP/s per GPU")  # fmt: skip
@click.option("--mfu", type=click.FloatRange(min=0, max=1, min_open=True), default=0.45, show_default=True)
@click.option("--trainable", type=click.FloatRange(min=0, max=1, min_open=True), default=1.0, show_default=True,
              help="trained fraction Ψ'/Ψ (PEFT: e.g. 0.003)")  # fmt: skip
@click.option("--grad-accum", type=click.IntRange(min=1), default=4, show_default=True, help="A micro-steps per step")
@click.option("--micro-batch", type=click.IntRange(min=1), default=2, show_default=True, help="sequences per GPU")
@click.option("--seq", type=click.IntRange(min=1), default=2048, show_default=True)
@click.option("--layers", type=click.IntRange(min=1), default=None, help="default: the nearest LLaMA preset's")
@click.option("--hidden", type=click.IntRange(min=1), default=None, help="default: the nearest LLaMA preset's")
@click.option("--precision", type=click.Choice(["bf16", "fp32", "fp64"]), default="bf16", show_default=True)
@click.option("--checkpointing/--no-checkpointing", default=True, show_default=True, help="activation recompute")
@click.option("--json", "as_json", is_flag=True, help="print the rows as JSON")
def train_advise(params: float, ranks: int, group_size: int, intra_gbps: float, inter_gbps: float,
                 intra_latency_us: float, inter_latency_us: float, memory_gib: float, peak_tflops: float, mfu: float,
                 trainable: float, grad_accum: int, micro_batch: int, seq: int, layers: int | None,
                 hidden: int | None, precision: str, checkpointing: bool, as_json: bool) -> None:  # fmt: skip
    """Rank the PaRO words (and flat ZeRO-1/2/3) by predicted tokens/s; those that fit in memory first.

    An alpha-beta model (bastion.distributed.costmodel): no overlap of communication and compute; GB/s are
    1e9 bytes/s.
    """
    import json

    from .core.report import to_jsonable
    from .distributed.costmodel import ClusterSpec, advise, custom_model

    try:
        model = custom_model(params, layers, hidden, seq)
        cluster = ClusterSpec("custom", group_size=group_size, bw_intra=intra_gbps * 1e9, bw_inter=inter_gbps * 1e9,
                              alpha_intra=intra_latency_us * 1e-6, alpha_inter=inter_latency_us * 1e-6,
                              memory_gib=memory_gib, peak_flops=peak_tflops * 1e12, hbm_bw=2.0e12)  # fmt: skip
        rows = advise(model, cluster, ranks, grad_accum, micro_batch, trainable, precision=precision,
                      checkpointing=checkpointing, mfu=mfu)  # fmt: skip
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if as_json:
        click.echo(json.dumps(to_jsonable({"model": model, "cluster": cluster, "ranks": ranks, "grad_accum": grad_accum,
                                           "micro_batch": micro_batch, "trainable": trainable, "rows": rows}),
                              indent=2))  # fmt: skip
        return
    g = ranks // group_size
    click.echo(f"Ψ = {params:.3g} ({model.layers} layers, hidden {model.hidden}), Ψ'/Ψ = {trainable:g}, {precision}; "
               f"{ranks} GPUs = {g} x {group_size}, {intra_gbps:g} / {inter_gbps:g} GB/s intra / inter, "
               f"{memory_gib:g} GiB; A = {grad_accum}, micro-batch {micro_batch} x {seq} tokens")  # fmt: skip
    table = [{"rank": r["rank"], "strategy": r["strategy"], "fits": r["fits"],
              "tokens/s": round(r["tokens_per_s"]), "vs best": round(r["vs_best"], 3),
              "step s": r["step_s"], "compute s": r["compute_s"], "comm s": r["comm_s"],
              "intra GB": r["intra_gb"], "inter GB": r["inter_gb"] + r["cross_gb"],
              "memory GiB": round(r["memory_gib"], 1), "states GiB": round(r["states_gib"], 1)}
             for r in rows]  # fmt: skip
    click.echo(markdown_table(table, floatfmt=".3g"))
    click.echo("GB sent per GPU per step (1e9 bytes); inter GB of zero1/2/3 are flat-ring bytes that cross nodes. "
               "memory = model states + activations + one gathered layer (buffers).")  # fmt: skip


cli.add_command(ctr_group)  # bastion ctr ...: src/bastion/ctr/cli.py


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``bastion`` console script."""
    try:
        cli.main(args=argv, prog_name="bastion", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.ClickException as exc:
        exc.show()
        return exc.exit_code
    except click.exceptions.Exit as exc:
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
