"""Membership inference side by side with ART 1.20 (issue #4, acceptance 3).

Target: the mnist1k MLP trained with SGD (40 epochs) on 1,000 members, for q = 0 and 0.2 label noise.
1. ART's ``MembershipInferenceBlackBoxRuleBased`` advantage vs our gap attack (must agree to 1e-9).
2. Shadow models: our ``ShadowModelAttack`` (4 shadows trained like the target on the 3,000 MNIST-5k
   digits outside the pool, logits + one-hot label, random forest) vs ART's
   ``MembershipInferenceBlackBox(input_type="prediction", attack_model_type="rf")`` fitted on the
   same shadow outputs; AUCs must differ by <= 0.03. ART's ``PyTorchClassifier.predict`` returns
   logits, so logits go to both.
3. ART's learned loss attack (``input_type="loss"``, fitted on the same shadows) next to our global
   loss ranking: reported, not asserted.
Writes ``benchmarks/results/sgld_vs_art.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from art.attacks.inference.membership_inference import MembershipInferenceBlackBox, MembershipInferenceBlackBoxRuleBased
from art.estimators.classification import PyTorchClassifier
from torch import nn

from bastion.core.report import environment, markdown_table, write_json
from bastion.privacy import ShadowModelAttack, audit, logits_of, membership_metrics, train_classifier
from bastion.reproduce.sgld import BATCH, EPOCHS, N_MEMBERS, _mlp, mnist1k_pool, mnist1k_shadow


def train_sgd(x, y, seed):
    torch.manual_seed(seed)
    net = _mlp()
    train_classifier(
        net, x, y, torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9), epochs=EPOCHS, batch_size=BATCH, seed=seed
    )
    return net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/sgld_vs_art.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.set_flush_denormal(True)
    rows = []
    for q in (0.0, 0.2):
        start = time.perf_counter()
        x, y = mnist1k_pool(args.seed, q)
        xm, ym, xn, yn = x[:N_MEMBERS], y[:N_MEMBERS], x[N_MEMBERS:], y[N_MEMBERS:]
        target = train_sgd(xm, ym, args.seed)
        clf = PyTorchClassifier(
            model=target, loss=nn.CrossEntropyLoss(), input_shape=(784,), nb_classes=10, clip_values=(0.0, 1.0)
        )

        ours = audit(target, (xm, ym), (xn, yn))
        rule = MembershipInferenceBlackBoxRuleBased(clf)
        art_adv = float(rule.infer(xm.numpy(), ym.numpy()).mean() - rule.infer(xn.numpy(), yn.numpy()).mean())

        xs, ys = mnist1k_shadow(args.seed, q)
        shadow = ShadowModelAttack(n_shadows=4, features="logits+label", classifier="random_forest", seed=args.seed)

        def shadow_fn(xa, ya, s):
            net = train_sgd(xa, ya, s)
            return lambda v: logits_of(net, v)

        shadow.fit(shadow_fn, xs, ys)
        out_m, out_n = logits_of(target, xm), logits_of(target, xn)
        our_shadow = membership_metrics(shadow.score(out_m, ym), shadow.score(out_n, yn))

        in_out, in_y, out_out, out_y = (t.numpy() for t in shadow.shadow_outputs_)
        art_shadow = MembershipInferenceBlackBox(clf, input_type="prediction", attack_model_type="rf")
        art_shadow.fit(y=in_y, test_y=out_y, pred=in_out.astype(np.float32), test_pred=out_out.astype(np.float32))
        pm = art_shadow.infer(None, ym.numpy(), pred=out_m.numpy().astype(np.float32), probabilities=True)
        pn = art_shadow.infer(None, yn.numpy(), pred=out_n.numpy().astype(np.float32), probabilities=True)
        art_shadow_auc = membership_metrics(np.asarray(pm)[:, -1], np.asarray(pn)[:, -1]).auc

        # ART's learned loss attack computes losses with the target itself: fit on half of the target's
        # members / non-members, evaluate on the other half (our global loss ranking on the same half)
        h = N_MEMBERS // 2
        art_loss = MembershipInferenceBlackBox(clf, input_type="loss", attack_model_type="rf")
        art_loss.fit(x=xm[:h].numpy(), y=ym[:h].numpy(), test_x=xn[:h].numpy(), test_y=yn[:h].numpy())
        lm = art_loss.infer(xm[h:].numpy(), ym[h:].numpy(), probabilities=True)
        ln = art_loss.infer(xn[h:].numpy(), yn[h:].numpy(), probabilities=True)
        art_loss_auc = membership_metrics(np.asarray(lm)[:, -1], np.asarray(ln)[:, -1]).auc
        ours_half = membership_metrics(ours.scores["loss"][0][h:], ours.scores["loss"][1][h:]).auc

        rows.append({
            "q": q,
            "our gap (acc gap)": ours.metrics["gap"].gap,
            "ART rule-based adv": art_adv,
            "|diff|": abs(ours.metrics["gap"].gap - art_adv),
            "our shadow AUC": our_shadow.auc,
            "ART shadow AUC": art_shadow_auc,
            "|AUC diff|": abs(our_shadow.auc - art_shadow_auc),
            "our loss AUC (global, eval half)": ours_half,
            "ART learned loss AUC (eval half)": art_loss_auc,
            "seconds": time.perf_counter() - start,
        })  # fmt: skip
    print(markdown_table(rows))
    ok_rule = all(r["|diff|"] <= 1e-9 for r in rows)
    ok_shadow = all(r["|AUC diff|"] <= 0.03 for r in rows)
    print(f"\nrule-based equal to 1e-9: {ok_rule}; shadow AUCs within 0.03: {ok_shadow}")
    write_json(
        Path(args.out),
        {"rows": rows, "rule_based_equal": ok_rule, "shadow_within_0.03": ok_shadow, "environment": environment()},
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
