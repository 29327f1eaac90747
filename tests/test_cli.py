"""The command line as a user meets it: --help that explains, and every
error one line in the CLI's words with the right exit code."""
from __future__ import annotations

import subprocess
import sys
from dataclasses import fields

import pytest

from ktgfast.cli import build_parser, main as cli
from ktgfast.cli.config_flags import _help_table, flag_groups
from ktgfast.cli.errors import CLI_WORDS, cli_words
from ktgfast.train import TrainConfig
from ktgfast.train.config import METHOD_GROUPS


def help_of(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        build_parser(argv).parse_args(argv)
    assert exit_.value.code == 0
    return capsys.readouterr().out


def test_every_config_field_has_one_group_and_a_description():
    grouped = [name for _, _, names in flag_groups() for name in names]
    assert sorted(grouped) == sorted(f.name for f in fields(TrainConfig))
    assert len(grouped) == len(set(grouped))
    table = _help_table()
    assert all(len(table[name][1]) > 10 for name in grouped)


def test_method_groups_follow_the_config():
    # every method-only field sits in a group that names its methods
    readers = {name: methods for methods, names in METHOD_GROUPS.values() for name in names}
    for title, methods, names in flag_groups():
        for name in names:
            if methods is not None:
                assert readers[name] == methods, (title, name)


def test_top_level_help_has_no_rest_markup(capsys):
    text = help_of(["--help"], capsys)
    assert "``" not in text and ":class:" not in text and ":func:" not in text
    for command in ("train", "distill", "search", "analyze", "graph", "reproduce", "info", "bench"):
        assert command in text


def test_train_help_shows_real_defaults_in_groups(capsys):
    text = help_of(["train", "--help"], capsys)
    for group in ("optimisation:", "data:", "semi-supervised (--method ssl):", "mixup (--method ktg):",
                  "generations (--method self-distill, ban):", "speed and devices:", "run:"):
        assert group in text, group
    flat = " ".join(text.split())
    assert "0.02 for mnist5k" in flat and "0.1 for cifar10/cifar100" in flat  # the recipe's lr
    assert "--epochs N epochs to train" in flat and "(default: 200)" in flat
    assert "--batch-size N images per step and rank" in flat and "(default: 64)" in flat
    assert "~/.cache/ktgfast/data" in flat  # the default data root


def test_help_for_a_method_hides_the_groups_it_does_not_read(capsys):
    text = help_of(["train", "--method", "ssl", "--help"], capsys)
    assert "--labels-per-class" in text
    assert "--mixup-alpha" not in text and "--generations" not in text and "--placement" not in text
    assert "Hidden for --method ssl: mixup (--method ktg)" in text
    distill = help_of(["distill", "--help"], capsys)
    assert "--aggregate" in distill and "--labels-per-class" not in distill
    assert "--epochs" in distill


def test_hidden_flags_still_parse_and_are_refused_by_name(tmp_path, capsys):
    code = cli(["train", "--method", "ssl", "--data", "synthetic", "--mixup", "beta",
                "--out", str(tmp_path / "run")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--mixup = 'beta' belongs to the mixup options" in err and "--method ssl does not use it" in err
    assert not (tmp_path / "run").exists()


def one_error(capsys, argv, code=2) -> str:
    assert cli(argv) == code
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"ktgfast {argv[0]}: error:"), err
    assert "Traceback" not in err
    return err.splitlines()[0]


@pytest.mark.parametrize("flags,message", [
    (["--epochs", "0"], "--epochs 0: allowed: an integer >= 1"),
    (["--epochs", "ten"], "--epochs ten: allowed: an integer"),
    (["--milestones", "a,b"], "--milestones a,b: allowed: an integer list"),
    (["--nesterov", "maybe"], "--nesterov maybe: allowed: true or false"),
    (["--placement", "scatter"], "--placement scatter: allowed: replicate, spread"),
    (["--graph-arg", "k"], "--graph-arg 'k': expected KEY=VALUE"),
    (["--graph-arg", "k=x"], "preset 'dml': k = 'x'; allowed: an integer"),
    (["--graph-arg", "models=[a,3]"], "models = ['a', 3]; allowed: a list of names"),
])
def test_flag_errors_use_the_cli_words(tmp_path, capsys, flags, message):
    err = one_error(capsys, ["train", "--data", "synthetic", "--out", str(tmp_path / "run"), *flags])
    assert message in err, err
    assert not (tmp_path / "run").exists()


def test_config_file_errors_name_the_file_and_key(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("epochs: ten\n")
    err = one_error(capsys, ["train", "--config", str(cfg), "--out", str(tmp_path / "r")])
    assert "run.yaml: epochs = 'ten'; allowed: an integer" in err
    cfg.write_text("epochs: 1\nschedule: cosin\n")
    err = one_error(capsys, ["train", "--config", str(cfg), "--out", str(tmp_path / "r")])
    assert "run.yaml: schedule = 'cosin'; allowed: auto, multistep, cosine, constant" in err
    # the Python API keeps its own words
    with pytest.raises(ValueError, match=r"^config.epochs = 0; allowed: an integer >= 1$"):
        TrainConfig(epochs=0).validate()


@pytest.mark.parametrize("what,flag", [("graph file", "--graph"), ("config file", "--config")])
def test_yaml_syntax_errors_are_one_line_with_the_position(tmp_path, capsys, what, flag):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: x\nnodes: [a\n")
    err = one_error(capsys, ["train", flag, str(bad), "--out", str(tmp_path / "r")])
    assert f"{what} '{bad}' is not valid YAML: line 3, column 1: expected ',' or ']'" in err, err


def test_data_layer_messages_are_told_in_cli_words(tmp_path, capsys):
    err = one_error(capsys, ["train", "--data", "cifar10", "--data-root", str(tmp_path),
                             "--out", str(tmp_path / "r")])
    assert "CIFAR-10 not found" in err and "Pass --download true" in err
    assert "point --data-root at the folder" in err and "download=True" not in err
    err = one_error(capsys, ["train", "--data", "imagefolder", "--out", str(tmp_path / "r")])
    assert "imagefolder needs --data-root <folder" in err


def test_every_cli_word_rule_rewrites_something():
    samples = {
        0: "re-download it (get_dataset('cifar10', root='/d', download=True)).",
        1: "Pass download=True to fetch", 2: "or point root at the folder",
        3: "imagefolder needs root=<folder>", 4: "or use amp=none.",
        5: "config.sync_bn = True (--sync-bn): SyncBatchNorm runs only on CUDA",
        6: "config.eval_splits asks for 'val'",
    }
    assert len(samples) == len(CLI_WORDS)
    for i, text in samples.items():
        assert cli_words(text) != text, CLI_WORDS[i]
    assert cli_words(samples[0]) == "re-download it (--data cifar10 --data-root /d --download true)."
    assert cli_words(samples[5]) == "--sync-bn = True: SyncBatchNorm runs only on CUDA"
    assert cli_words(samples[6]) == "--eval-splits asks for 'val'"


@pytest.mark.slow
def test_a_diverged_run_is_one_line_exit_1_and_debug_shows_the_traceback(tmp_path):
    argv = [sys.executable, "-m", "ktgfast", "train", "--data", "synthetic", "--epochs", "1",
            "--lr", "1e6", "--verbose", "false", "--tensorboard", "false", "--eval-splits", "test"]
    quiet = subprocess.run(argv + ["--out", str(tmp_path / "a")], capture_output=True, text=True,
                           timeout=600)
    assert quiet.returncode == 1, quiet.stderr
    lines = quiet.stderr.strip().splitlines()
    assert lines[0].startswith("ktgfast train: error: loss of node") and "NaN/Inf" in lines[0]
    assert "use --amp none" in lines[0] and "Traceback" not in quiet.stderr
    assert lines[1] == "(--debug or KTGFAST_DEBUG=1 shows the traceback)"
    loud = subprocess.run([*argv[:3], "--debug", *argv[3:], "--out", str(tmp_path / "b")],
                          capture_output=True, text=True, timeout=600)
    assert loud.returncode == 1 and "Traceback" in loud.stderr and "NonFiniteLossError" in loud.stderr


def test_reproduce_is_a_command(capsys):
    assert cli(["reproduce", "list"]) == 0
    assert "ktg-cifar100" in capsys.readouterr().out
    assert cli(["reproduce", "bogus"]) == 2
    assert "unknown recipe 'bogus'; allowed: list," in capsys.readouterr().err


def test_tensorboard_missing_is_said_once(tmp_path, monkeypatch, capsys):
    import ktgfast.train.metrics as metrics

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    monkeypatch.setattr(metrics, "_TOLD", set())
    first = metrics.MetricsLog(tmp_path / "a", tensorboard=True)
    metrics.MetricsLog(tmp_path / "b", tensorboard=True)
    err = capsys.readouterr().err
    assert first.writer is None
    assert err.count("TensorBoard is not installed (pip install tensorboard)") == 1
    monkeypatch.setattr(metrics, "_TOLD", set())
    metrics.MetricsLog(tmp_path / "c", tensorboard=False)  # off: nothing to say
    assert capsys.readouterr().err == ""


def test_graph_file_errors_name_the_file(tmp_path, capsys):
    graph = tmp_path / "mine.yaml"
    graph.write_text("nodes:\n  - {name: a, model: resnet2000}\nedges:\n  - {src: label, dst: a, loss: ce}\n")
    err = one_error(capsys, ["train", "--graph", str(graph), "--out", str(tmp_path / "r")])
    assert "mine.yaml.nodes[0].model: unknown model 'resnet2000'; allowed: auto," in err
    graph.write_text("nodes:\n  - {name: a, model: mlp}\n  - {name: b, model: mlp}\nedges:\n"
                     "  - {src: label, dst: a, loss: ce}\n  - {src: a, dst: b, loss: kl, gate: sine}\n")
    err = one_error(capsys, ["train", "--graph", str(graph), "--out", str(tmp_path / "r")])
    assert "mine.yaml.edges[1].gate.f: missing; the sine gate needs f and phi" in err
    assert not (tmp_path / "r").exists()
