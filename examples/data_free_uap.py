"""A universal perturbation crafted without any data, transferred to models it never saw (MNIST-5k zoo).

The data-free UAP (Huan et al., PAKDD 2020) maximises how much the surrogate's block features move under one
perturbation delta, ||delta||_inf <= 0.1, on Gaussian "range prior" images only; it returns the checkpoint that
fools the surrogate most on a fixed set of prior images (proxy validation, never real data). It is compared
with same-norm sign noise and with SGD-UAP, which does read the attacker's own training digits, on the four zoo
architectures. For the two-owner protocol and the ImageNet run see `bastion reproduce uap`.

About 20 s on one thread once the zoo models are cached (the first run trains the four, a minute each).
Run: .venv/bin/python examples/data_free_uap.py
"""

import torch

from bastion import zoo
from bastion.attacks.transfer import DataFreeUAP, sgd_uap, sign_noise, transfer_matrix
from bastion.core.report import markdown_table
from bastion.data import load_dataset

torch.set_num_threads(1)
archs = ("mlp", "cnn", "resnet", "wide")
targets = {arch: zoo.load(f"mnist5k-{arch}").classifier() for arch in archs}  # [0, 1] images in, logits out
surrogate = targets["mlp"]
test = load_dataset("mnist5k", "test").images  # evaluation digits: never seen by the crafting below
train = load_dataset("mnist5k", "train").images

uap = DataFreeUAP(surrogate, xi=0.1, objective="divergence", prior="range", steps=300, batch_size=32, seed=0)
result = uap.fit((1, 28, 28))  # reads no data: Gaussian range-prior images only
checks = [h for h in result.history if "val_fooling" in h]
print(f"data-free fit: {result.seconds:.1f} s, {len(checks)} proxy validations, returned the delta of step "
      f"{result.config['chosen_step']} (proxy fooling rate {max(h['val_fooling'] for h in checks):.2f})")  # fmt: skip
uap.select = "last"  # the same trajectory, the final delta (possibly just halved by the saturation rescale)
perturbations = {
    "sign noise": sign_noise((1, 28, 28), 0.1, seed=0),
    "data-free (best on proxy)": result.delta,
    "data-free (last step)": uap.fit((1, 28, 28)).delta,
    "SGD-UAP (reads 4,000 train digits)": sgd_uap(surrogate, train, 0.1, steps=300, batch_size=32, seed=0).delta,
}
rows = transfer_matrix(perturbations, targets, test)
print("fooling rate on the 1,000 test digits; surrogate = mlp (white box), the others never seen")
print(markdown_table(rows))
