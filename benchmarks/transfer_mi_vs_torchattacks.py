"""Our gradient-transfer core (``bastion.attacks.transfer.core.TransferAttack``) against torchattacks 3.5.1.

Same model, images and settings; outputs compared element by element (max |diff|, count of differing
values) and time per step (median of ``--repeats`` runs in alternating order, one torch thread).

Cases, on the zoo's MNIST-5k CNN (``zoo.load("mnist5k-cnn").classifier()``: its normalisation sits
inside the module, so torchattacks' own normalisation stays off) and the first ``--n`` MNIST-5k test
digits; MIFGSM has no random start:

- ``MIFGSM`` at torchattacks' defaults (eps 8/255, alpha 2/255, 10 steps, decay 1) -- the acceptance case;
- ``MIFGSM`` at the MNIST setting eps 0.3, alpha 0.01, 40 steps, untargeted and targeted (label + 1);
- ``DIFGSM`` with decay 1 (MI + DI): torchattacks draws from the global generator after
  ``torch.manual_seed(s)``, ours from a generator seeded with ``s``, in the same order;
- ``TIFGSM`` with decay 1 (MI + DI + TI, Gaussian 5x5, nsig 3): torchattacks' kernel has 3 channels,
  so the digits are replicated to RGB and a fixed 1x1 convolution (weights 1/3) maps them back.

Install: ``pip install --no-deps torchattacks==3.5.1`` (its metadata pins ``requests~=2.25.1``; the
code needs only torch, torchvision, scipy, numpy, tqdm, already installed).
Writes ``benchmarks/results/transfer_mi_vs_torchattacks.json``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from importlib.metadata import version
from pathlib import Path

import torch
from torch import nn

from bastion import zoo
from bastion.attacks.transfer.core import TransferAttack, gaussian_kernel
from bastion.core.report import environment, markdown_table, write_json
from bastion.data import load_dataset

INSTALL = "pip install --no-deps torchattacks==3.5.1"


def cases(torchattacks, clf: nn.Module, grey: nn.Module, y: torch.Tensor):
    """(name, model, rgb input?, steps, torchattacks factory, our attack, our targets, seed)."""
    target = (y + 1) % 10
    ta = torchattacks

    def targeted_mifgsm():
        atk = ta.MIFGSM(clf, eps=0.3, alpha=0.01, steps=40, decay=1.0)
        atk.set_mode_targeted_by_function(lambda images, labels: target, quiet=True)
        return atk

    return [
        (
            "MIFGSM defaults (8/255, 2/255, 10 steps)", clf, False, 10,
            lambda: ta.MIFGSM(clf, eps=8 / 255, alpha=2 / 255, steps=10, decay=1.0),
            TransferAttack(clf, "untargeted", steps=10, eps=8 / 255, alpha=2 / 255, mu=1.0), y, 0,
        ),
        (
            "MIFGSM eps 0.3, alpha 0.01, 40 steps", clf, False, 40,
            lambda: ta.MIFGSM(clf, eps=0.3, alpha=0.01, steps=40, decay=1.0),
            TransferAttack(clf, "untargeted", steps=40, eps=0.3, alpha=0.01, mu=1.0), y, 0,
        ),
        (
            "MIFGSM targeted (y+1), eps 0.3, 40 steps", clf, False, 40, targeted_mifgsm,
            TransferAttack(clf, "targeted", steps=40, eps=0.3, alpha=0.01, mu=1.0), target, 0,
        ),
        (
            "DIFGSM decay 1 (MI+DI), eps 0.3, 40 steps", clf, False, 40,
            lambda: ta.DIFGSM(clf, eps=0.3, alpha=0.01, steps=40, decay=1.0),
            TransferAttack(clf, "untargeted", steps=40, eps=0.3, alpha=0.01, mu=1.0, di=0.5, seed=7), y, 7,
        ),
        (
            "TIFGSM decay 1 (MI+DI+TI 5x5), RGB, eps 0.3", grey, True, 40,
            lambda: ta.TIFGSM(grey, eps=0.3, alpha=0.01, steps=40, decay=1.0, len_kernel=5, nsig=3),
            TransferAttack(
                grey, "untargeted", steps=40, eps=0.3, alpha=0.01, mu=1.0, di=0.5,
                ti_kernel=gaussian_kernel(5, 3), seed=7,
            ),
            y, 7,
        ),
    ]  # fmt: skip


def success(pred: torch.Tensor, y: torch.Tensor, targets: torch.Tensor, targeted: bool) -> float:
    """Share misclassified (untargeted) or classified as the target (targeted)."""
    return float((pred == targets if targeted else pred != y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=256, help="test digits")
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per library and case")
    parser.add_argument("--out", default="benchmarks/results/transfer_mi_vs_torchattacks.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    try:
        import torchattacks
    except ImportError:
        sys.exit(f"torchattacks is not installed: {INSTALL}")

    model = zoo.load("mnist5k-cnn")
    clf = model.classifier()
    test = load_dataset("mnist5k", "test")
    x, y = test.images[: args.n], test.labels[: args.n]
    grey = nn.Sequential(nn.Conv2d(3, 1, 1, bias=False), clf).eval()
    with torch.no_grad():
        grey[0].weight.fill_(1.0 / 3.0)
    x_rgb = x.expand(-1, 3, -1, -1).contiguous()
    with torch.no_grad():
        clean_acc = float((clf(x).argmax(1) == y).float().mean())

    rows = []
    for name, net, rgb, steps, make_theirs, ours, targets, seed in cases(torchattacks, clf, grey, y):
        xin = x_rgb if rgb else x

        def run_theirs(make_theirs=make_theirs, seed=seed, xin=xin):
            torch.manual_seed(seed)
            return make_theirs()(xin, y)

        def run_ours(ours=ours, xin=xin, targets=targets):
            return ours.run(xin, targets).adversarial

        theirs_out, ours_out = run_theirs(), run_ours()
        diff = (ours_out - theirs_out).abs()
        t_theirs, t_ours = [], []
        for r in range(args.repeats):
            order = [(run_theirs, t_theirs), (run_ours, t_ours)]
            for fn, sink in order if r % 2 == 0 else order[::-1]:
                start = time.perf_counter()
                fn()
                sink.append(time.perf_counter() - start)
        with torch.no_grad():
            pred_ours, pred_theirs = net(ours_out).argmax(1), net(theirs_out).argmax(1)
        targeted = ours.goal == "targeted"
        ms_theirs = 1e3 * statistics.median(t_theirs) / steps
        ms_ours = 1e3 * statistics.median(t_ours) / steps
        rows.append(
            {
                "case": name,
                "max |diff|": float(diff.max()),
                "values differing": int((diff > 0).sum()),
                "of": diff.numel(),
                "success ours": success(pred_ours, y, targets, targeted),
                "success torchattacks": success(pred_theirs, y, targets, targeted),
                "ms/step ours": ms_ours,
                "ms/step torchattacks": ms_theirs,
                "time ratio ours/theirs": ms_ours / ms_theirs,
            }
        )
        print(f"{name}: max |diff| {float(diff.max()):.3g}, ratio {ms_ours / ms_theirs:.3f}", flush=True)

    print()
    print(f"mnist5k-cnn, {args.n} MNIST-5k test digits (clean accuracy {clean_acc:.4f}), one thread, ")
    print(f"median of {args.repeats} runs; success = misclassified (untargeted) or = target (targeted)")
    print(markdown_table(rows))
    acceptance = rows[0]["max |diff|"] <= 1e-6
    print(f"\nacceptance (MIFGSM defaults, max |diff| <= 1e-6): {'PASS' if acceptance else 'FAIL'}")
    write_json(
        Path(args.out),
        {
            "rows": rows,
            "clean_accuracy": clean_acc,
            "acceptance_max_abs_diff_le_1e-6": acceptance,
            "all_cases_max_abs_diff": max(r["max |diff|"] for r in rows),
            "model": "mnist5k-cnn",
            "threads": torch.get_num_threads(),
            "versions": {"torchattacks": version("torchattacks"), "torch": torch.__version__},
            "install": INSTALL,
            "environment": environment(),
            "args": vars(args),
        },
    )


if __name__ == "__main__":
    main()
