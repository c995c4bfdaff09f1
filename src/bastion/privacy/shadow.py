"""Shokri et al.'s shadow-model attack (IEEE S&P 2017): learn "member or not" from shadow models.

Shadow models are trained like the target (``train_fn``) on data disjoint from the target's. Each
shadow gets a disjoint slice of the shadow data, half of it IN (trained on) and half OUT; the attack
classifier learns to tell the shadows' outputs on IN points from those on OUT points. Features:
``"logits+label"`` (logits and the one-hot label, what ART's ``MembershipInferenceBlackBox`` uses)
or ``"sorted_probs"`` (probabilities sorted in decreasing order, Shokri's label-free form, optionally
one classifier per class with ``per_class=True``). The classifier is scikit-learn's random forest
(default) or logistic regression.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression

from ..core.checks import check_choice, check_int, check_labels, check_tensor
from .attacks import MembershipAttack, log_probs

__all__ = ["ShadowModelAttack"]


class ShadowModelAttack(MembershipAttack):
    """Shadow-model membership attack; :meth:`fit` trains shadows, :meth:`score` scores the target's outputs.

    Parameters
    ----------
    n_shadows:
        Number of shadow models (each on its own disjoint slice of the shadow data).
    features:
        ``"logits+label"`` or ``"sorted_probs"``.
    classifier:
        ``"random_forest"`` or ``"logistic"``.
    per_class:
        One attack classifier per true label (``"sorted_probs"`` only).
    seed:
        Seeds the slicing and the classifier.
    """

    name = "shadow"

    def __init__(
        self,
        *,
        n_shadows: int = 4,
        features: str = "logits+label",
        classifier: str = "random_forest",
        per_class: bool = False,
        seed: int = 0,
    ) -> None:
        self.n_shadows = check_int(n_shadows, "n_shadows", minimum=1)
        self.features = check_choice(features, "features", ("logits+label", "sorted_probs"))
        self.classifier = check_choice(classifier, "classifier", ("random_forest", "logistic"))
        if per_class and features != "sorted_probs":
            raise ValueError("per_class=True needs features='sorted_probs'")
        self.per_class = bool(per_class)
        self.seed = check_int(seed, "seed", minimum=0)
        self._models: dict[int | None, object] = {}
        self.num_classes: int | None = None

    def _featurize(self, outputs: torch.Tensor, labels: torch.Tensor, kind: str) -> np.ndarray:
        if self.features == "sorted_probs":
            return log_probs(outputs, labels, kind).exp().sort(dim=1, descending=True).values.numpy()
        lp = outputs.detach().to(torch.float64) if kind == "logits" else log_probs(outputs, labels, kind)
        onehot = torch.nn.functional.one_hot(labels.long(), outputs.shape[1]).to(torch.float64)
        return torch.cat([lp, onehot], dim=1).numpy()

    def _new_classifier(self):
        if self.classifier == "random_forest":
            return RandomForestClassifier(n_estimators=100, random_state=self.seed, n_jobs=1)
        return LogisticRegression(max_iter=2000)

    def fit_features(self, in_outputs, in_labels, out_outputs, out_labels, kind: str = "logits") -> ShadowModelAttack:
        """Fit the attack classifier on given shadow outputs (IN = members of the shadows)."""
        f_in, f_out = self._featurize(in_outputs, in_labels, kind), self._featurize(out_outputs, out_labels, kind)
        feats = np.concatenate([f_in, f_out])
        target = np.concatenate([np.ones(len(f_in)), np.zeros(len(f_out))])
        labels = torch.cat([in_labels, out_labels]).numpy()
        self.num_classes = int(in_outputs.shape[1])
        self._models = {}
        groups = np.unique(labels) if self.per_class else [None]
        for g in groups:
            rows = labels == g if g is not None else slice(None)
            if len(np.unique(target[rows])) < 2:
                continue
            self._models[None if g is None else int(g)] = self._new_classifier().fit(feats[rows], target[rows])
        if not self._models:
            raise ValueError("shadow data gave no IN/OUT contrast to learn from")
        return self

    def fit(
        self,
        train_fn: Callable[[torch.Tensor, torch.Tensor, int], Callable[[torch.Tensor], torch.Tensor]],
        x: torch.Tensor,
        y: torch.Tensor,
    ) -> ShadowModelAttack:
        """Train ``n_shadows`` shadows with ``train_fn(x_in, y_in, seed) -> predict_logits`` and fit.

        ``x, y`` is shadow data, disjoint from the target's training data.
        """
        check_tensor(x, "x", floating=True)
        check_labels(y, "y", n=x.shape[0])
        per = x.shape[0] // (2 * self.n_shadows)
        if per < 1:
            raise ValueError(
                f"need at least {2 * self.n_shadows} shadow examples for {self.n_shadows} shadows, got {x.shape[0]}"
            )
        perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(self.seed))
        ins, outs = [], []
        for s in range(self.n_shadows):
            idx_in = perm[2 * s * per : (2 * s + 1) * per]
            idx_out = perm[(2 * s + 1) * per : (2 * s + 2) * per]
            predict = train_fn(x[idx_in], y[idx_in], self.seed + s)
            with torch.no_grad():
                ins.append((predict(x[idx_in]), y[idx_in]))
                outs.append((predict(x[idx_out]), y[idx_out]))
        #: the shadows' outputs and labels on their IN and OUT points, kept for inspection and benchmarks
        self.shadow_outputs_ = (
            torch.cat([o for o, _ in ins]), torch.cat([t for _, t in ins]),
            torch.cat([o for o, _ in outs]), torch.cat([t for _, t in outs]),
        )  # fmt: skip
        return self.fit_features(*self.shadow_outputs_)

    def score(self, outputs, labels, kind="logits"):
        if not self._models:
            raise ValueError("ShadowModelAttack is not fitted: call fit(train_fn, x_shadow, y_shadow) first")
        check_labels(labels, "labels", n=outputs.shape[0])
        if outputs.shape[1] != self.num_classes:
            raise ValueError(f"outputs must have {self.num_classes} classes like the shadows, got {outputs.shape[1]}")
        feats = self._featurize(outputs, labels, kind)
        scores = np.full(len(feats), 0.5)
        lab = labels.numpy()
        for g, model in self._models.items():
            rows = np.ones(len(lab), bool) if g is None else lab == g
            if rows.any():
                scores[rows] = model.predict_proba(feats[rows])[:, 1]
        return torch.from_numpy(scores)

    def __repr__(self) -> str:
        return (
            f"ShadowModelAttack(n_shadows={self.n_shadows}, features={self.features!r}, "
            f"classifier={self.classifier!r}, per_class={self.per_class}, seed={self.seed})"
        )
