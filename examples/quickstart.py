"""Quick start: a zoo model as a hard-label black box with a per-sample query budget.

Run: .venv/bin/python examples/quickstart.py
"""

import torch

from bastion import zoo
from bastion.core import BudgetExhausted, seed_everything
from bastion.data import load_dataset

seed_everything(0)
torch.set_num_threads(1)
model = zoo.load("mnist5k-cnn")  # trains once (under a minute), then loads from the cache
test = load_dataset("mnist5k", "test")
box = model.blackbox(budget=100)  # labels only, 100 queries per sample, preprocessing inside
labels = box(test.images[:8])  # 8 images = 8 queries, one charged to each sample
print("accuracy on 8 digits:", (labels == test.labels[:8]).float().mean().item())
print("queries per sample:", box.queries.tolist())
try:
    box(test.images[:1].repeat(100, 1, 1, 1), sample_ids=torch.zeros(100, dtype=torch.long))
except BudgetExhausted as err:
    print("refused:", err)
