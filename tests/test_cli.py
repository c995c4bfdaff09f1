from __future__ import annotations

import json

import pytest

from bastion.cli import main


def test_help_and_version(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "reproduce" in out and "zoo" in out
    assert main(["--version"]) == 0
    assert "bastion" in capsys.readouterr().out


def test_zoo_list_and_reproduce_list(capsys):
    assert main(["zoo", "list"]) == 0
    out = capsys.readouterr().out
    assert "mnist5k-cnn" in out and "efficientnet-lite0" in out
    assert main(["reproduce", "--list"]) == 0
    assert "| zoo |" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["zoo", "train", "mnist5k-vit"], "unknown zoo model"),
        (["reproduce", "nope"], "unknown reproduction"),
        (["reproduce"], "give a reproduction NAME"),
        (["--threads", "0", "zoo", "list"], "threads"),
    ],
)
def test_bad_arguments_exit_2_with_a_message(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_all_quick_writes_report(tmp_path, capsys):
    assert main(["reproduce", "all", "--quick", "--out", str(tmp_path)]) == 0
    result = json.loads((tmp_path / "zoo" / "result.json").read_text())
    assert result["claims"] and all(c["holds"] for c in result["claims"]), result["claims"]
    assert (tmp_path / "index.html").is_file() and (tmp_path / "zoo" / "zoo.png").is_file()


def test_audit_command(tmp_path, capsys):
    out = tmp_path / "audit"
    argv = [
        "audit",
        "--model",
        "zoo:mnist5k-mlp",
        "--members",
        "mnist5k:train[:300]",
        "--nonmembers",
        "mnist5k:test[:300]",
    ]
    assert main([*argv, "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| loss |" in text and "gap" in text
    data = json.loads((out / "audit.json").read_text())
    assert {r["attack"] for r in data["attacks"]} == {
        "loss",
        "yeom",
        "confidence",
        "entropy",
        "modified_entropy",
        "gap",
    }
    assert data["member_accuracy"] >= data["nonmember_accuracy"]
    assert (out / "roc.png").is_file()
    assert (
        main(["audit", "--model", "zoo:mnist5k-mlp", "--members", "mnist5k:trai", "--nonmembers", "mnist5k:test"]) == 2
    )
    assert "'trai'" in capsys.readouterr().err
    assert (
        main(["audit", "--model", "zoo:mnist5k-mlp", "--members", "digits:test", "--nonmembers", "mnist5k:test"]) == 2
    )
    assert "expects (1, 28, 28)" in capsys.readouterr().err


def test_audit_with_zoo_recipe_runs_shadow_and_lira(tmp_path, capsys):
    argv = [
        "audit", "--model", "zoo:mnist5k-mlp", "--members", "mnist5k:train[:200]",
        "--nonmembers", "mnist5k:test[:200]", "--shadow-data", "mnist5k:test[200:600]",
        "--lira-models", "2", "--out", str(tmp_path),
    ]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| shadow |" in text and "| lira_online |" in text and "| lira_offline |" in text


def test_attack_command(tmp_path, capsys):
    argv = ["attack", "--method", "qeba-f", "--model", "zoo:mnist5k-cnn", "--n", "3", "--budget", "150",
            "--out", str(tmp_path)]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "qeba-f on mnist5k-cnn: success 3/3" in text
    data = json.loads((tmp_path / "qeba-f_mnist5k-cnn.json").read_text())
    assert all(r["queries"] <= 150 and r["label"] != r["adversarial label"] for r in data["rows"])
    assert (tmp_path / "qeba-f_mnist5k-cnn.png").is_file()
    targeted = [*argv[:-2], "--targeted", "--out", str(tmp_path / "t")]
    assert main(targeted) == 0
    assert main(["attack", "--method", "nope", "--model", "zoo:mnist5k-cnn"]) == 2
    assert "unknown attack" in capsys.readouterr().err


def test_attack_command_generator_methods_and_boundary(tmp_path, capsys, monkeypatch):
    """nlba-* and psba get a zoo generator (a one-epoch one here, uncached) and PSBA a scale search."""
    import dataclasses

    import torch

    import bastion.attacks.decision as decision
    from bastion.attacks.decision import generators as gen_mod

    grads = torch.randn(64, 784)

    def tiny(kind, dataset, references, seed=0, quiet=True):
        assert dataset == "mnist5k" and "mnist5k-cnn" not in references  # never the target
        recipe = dataclasses.replace(gen_mod.RECIPES[kind], epochs=1, batch_size=32)
        return gen_mod.train_generator(kind, grads, (1, 28, 28), recipe=recipe, seed=seed)

    monkeypatch.setattr(decision, "zoo_generator", tiny)
    for method in ("nlba-vae", "psba", "boundary", "sign-opt"):
        argv = ["attack", "--method", method, "--model", "zoo:mnist5k-cnn", "--n", "2", "--budget", "120",
                "--out", str(tmp_path)]  # fmt: skip
        assert main(argv) == 0, method
        text = capsys.readouterr().out
        assert f"{method} on mnist5k-cnn: success 2/2" in text
        data = json.loads((tmp_path / f"{method}_mnist5k-cnn.json").read_text())
        assert all(r["queries"] <= 120 for r in data["rows"])
        if method == "psba":
            assert "PSBA scale " in text
    argv = ["attack", "--method", "boundary", "--norm", "linf", "--model", "zoo:mnist5k-cnn", "--n", "2"]
    assert main(argv) == 2
    assert "L2 attack" in capsys.readouterr().err


def test_backdoor_poison_command_writes_a_poisoned_copy(tmp_path, capsys):
    import torch

    from bastion.backdoor import read_voc, scenes, write_yolo

    write_yolo(scenes(20, seed=1), tmp_path / "src")
    argv = ["backdoor", "poison", "--attack", "gma", "--data", f"yolo:{tmp_path / 'src'}", "--target", "disc",
            "--rate", "0.25", "--format", "voc", "--out", str(tmp_path / "out")]  # fmt: skip
    assert main(argv) == 0
    assert "GMA: poisoned 5 of 20 images" in capsys.readouterr().out
    meta = json.loads((tmp_path / "out" / "poisoned.json").read_text())
    back = read_voc(tmp_path / "out")
    for i in meta["indices"]:
        assert set(back.targets[i]["labels"].tolist()) <= {0}  # every label -> disc
        assert torch.equal(back.images[i, :, :8, :8], chessboard_for_test())
    assert main([*argv[:-2], "--rate", "0", "--out", str(tmp_path / "x")]) == 2
    assert "rate" in capsys.readouterr().err
    assert main(["backdoor", "poison", "--attack", "oga", "--data", "nope:1", "--target", "0", "--out", "x"]) == 2


def chessboard_for_test():
    from bastion.backdoor import chessboard

    return chessboard(8, 2)


def test_backdoor_train_evaluate_cleanse_round_trip(tmp_path, capsys):
    import torch

    from bastion.backdoor import map50, scenes
    from bastion.backdoor.detectors import load_detector

    model_dir, clean_dir = tmp_path / "oga", tmp_path / "clean"
    assert main(["backdoor", "poison", "--attack", "oga", "--data", "scenes:48,1", "--target", "disc",
                 "--rate", "0.5", "--format", "coco", "--out", str(tmp_path / "poisoned")]) == 0  # fmt: skip
    argv = ["backdoor", "train", "--data", f"coco:{tmp_path / 'poisoned' / 'annotations.json'}", "--steps", "3",
            "--batch", "4", "--out", str(model_dir)]  # fmt: skip
    assert main(argv) == 0
    assert main(["backdoor", "train", "--data", "scenes:48,1", "--detector", "faster-rcnn", "--steps", "2",
                 "--batch", "2", "--out", str(clean_dir)]) == 0  # fmt: skip
    out = capsys.readouterr().out
    assert "trained onestage on 48 images, 3 steps" in out and "trained faster-rcnn" in out
    model, meta = load_detector(model_dir)
    assert meta["classes"] == ["disc", "square", "triangle", "cross"] and meta["steps"] == 3
    test = scenes(12, seed=9)
    with torch.no_grad():
        expected, _ = map50(model(test.images), test.targets)  # the saved model, reloaded, gives the CLI's figure
    report = tmp_path / "eval.json"
    assert main(["backdoor", "evaluate", "--model", str(model_dir), "--data", "scenes:12,9", "--attack", "oga",
                 "--target", "disc", "--clean-model", str(clean_dir), "--out", str(report)]) == 0  # fmt: skip
    result = json.loads(report.read_text())
    assert result["benign mAP@50"] == pytest.approx(expected)
    assert 0 <= result["ASR s>0.5"] <= 1 and 0 <= result["clean model s>0.5"] <= 1
    assert result["triggered images"] == 12  # OGA: every image is eligible
    flags = tmp_path / "flags.json"
    argv = ["backdoor", "cleanse", "--model", str(model_dir), "--calibrate", "scenes:8,3", "--features", "scenes:8,4",
            "--data", "scenes:5,5", "--n-features", "2", "--score-threshold", "0", "--out", str(flags)]  # fmt: skip
    assert main(argv) == 0
    screened = json.loads(flags.read_text())
    assert len(screened["images"]) == 5 and screened["delta"] >= 0
    assert "flagged" in capsys.readouterr().out
    assert main(["backdoor", "evaluate", "--model", str(tmp_path / "none"), "--data", "scenes:4"]) == 2
    assert "model.json" in capsys.readouterr().err
    assert main(["backdoor", "evaluate", "--model", str(model_dir), "--data", "scenes:4", "--attack", "gma",
                 "--target", "7"]) == 2  # fmt: skip
    assert "--target" in capsys.readouterr().err
    assert main(["backdoor", "evaluate", "--model", str(model_dir), "--data", "scenes:4", "--target", "disc"]) == 2
    assert "need --attack" in capsys.readouterr().err
    assert main(["backdoor", "train", "--data", "scenes:4", "--lr", "0", "--out", str(tmp_path / "z")]) == 2


def test_tgraph_run_on_an_official_layout_file(tmp_path, capsys):
    from bastion.tgraph import open_temporal_graph, write_otg

    graph = open_temporal_graph("reddit_like", tasks=2, nodes_per_class=30, events_per_node=5, seed=1)
    csv_path, _ = write_otg(graph, tmp_path / "toy.csv")
    out = tmp_path / "run.json"
    argv = ["tgraph", "run", "--method", "finetune", "--data", str(csv_path), "--epochs", "2", "--out", str(out)]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "toy: 900 events, 180 nodes, 2 tasks of 3 classes" in text and "AP " in text
    result = json.loads(out.read_text())
    assert len(result["acc"]) == 2 and 0 <= result["AP"] <= 100
    bad = tmp_path / "bad.csv"
    bad.write_text("u,i,ts,label_u,label_i,idx\n1,2,5,0,0,1\n2,3,4,0,0,2\n")
    assert main(["tgraph", "run", "--data", str(bad)]) == 2
    assert "column ts" in capsys.readouterr().err
    assert main(["tgraph", "run", "--data", str(csv_path), "--num-classes", "4"]) == 2
    assert "outside [0, 4)" in capsys.readouterr().err
