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
