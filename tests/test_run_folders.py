"""Run folders (ktgfast.train.resume): a folder that holds a run is never
trained into again unless resumed or overwritten on purpose, --resume checks
the graph, method, data and math fields against the checkpoint and records the
fields it changes, and stale temporary files of atomic writes are removed on
start.  Real ``ktgfast train`` processes where the claim is about them."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
from dataclasses import fields

import optuna
import pytest
import yaml

from ktgfast.cli import main as cli
from ktgfast.data import get_dataset
from ktgfast.search.study import SearchSettings, _check_study_folder
from ktgfast.train import TrainConfig, Trainer
from ktgfast.train import checkpoint as ckpt
from ktgfast.train import resume as rules
from ktgfast.train import run as run_mod


def tiny_data(seed: int = 0):
    return get_dataset("synthetic", val_size=64, n_train=256, n_test=64, num_classes=4, channels=1,
                       image_size=8, noise=150.0, seed=seed)


@pytest.fixture(scope="module")
def data():
    return tiny_data()


def cfg(out, **kw) -> TrainConfig:
    base = dict(epochs=1, batch_size=32, lr=0.05, schedule="constant", augment="none",
                tensorboard=False, device="cpu", progress_bar=False, verbose=False, out=str(out))
    base.update(kw)
    return TrainConfig(**base)


def graph():
    from ktgfast.graph import get_preset

    return get_preset("vanilla", model="cnn_small")


def cli_args(out, *extra):
    return ["train", "--graph", "vanilla", "--graph-arg", "model=cnn_small", "--data", "synthetic",
            "--out", str(out), "--eval-splits", "test", "--batch-size", "32", "--schedule", "constant",
            "--lr", "0.05", "--device", "cpu", "--tensorboard", "false", "--progress-bar", "false",
            *extra]


def test_every_field_is_classified():
    assert set(rules.FIELDS) == {f.name for f in fields(TrainConfig)}
    assert set(rules.FIELDS.values()) == {rules.MATH, rules.MAY_CHANGE}
    for name in ("lr", "batch_size", "seed", "schedule", "amp", "augment", "mixup"):
        assert rules.FIELDS[name] == rules.MATH
    for name in ("epochs", "log_every", "verbose", "out", "threads", "device"):
        assert rules.FIELDS[name] == rules.MAY_CHANGE


def test_a_run_folder_is_refused_before_any_data_or_model(tmp_path, data, monkeypatch):
    Trainer(graph(), data, cfg(tmp_path / "r")).fit()
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r").iterdir()}

    def no_building(method):
        raise AssertionError("the step (data, models) was built before the refusal")

    monkeypatch.setattr(run_mod, "step_class", no_building)
    with pytest.raises(rules.RunFolderError, match=r"checkpoint\.pt.*metrics\.csv.*--resume.*--out.*--overwrite"):
        Trainer(graph(), data, cfg(tmp_path / "r"))
    assert {p.name: p.stat().st_mtime_ns for p in (tmp_path / "r").iterdir()} == before


def test_cli_refuses_with_exit_2_and_keeps_the_run(tmp_path, capsys):
    assert cli(cli_args(tmp_path / "r", "--epochs", "1")) == 0
    first = (tmp_path / "r" / "metrics.csv").read_text()
    assert cli(cli_args(tmp_path / "r", "--epochs", "1", "--seed", "1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a run" in err[0] and "--resume" in err[0]
    assert (tmp_path / "r" / "metrics.csv").read_text() == first


def test_folder_without_checkpoint_says_there_is_nothing_to_resume(tmp_path, data):
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "config.yaml").write_text("config: {}\n")
    with pytest.raises(rules.RunFolderError, match="no checkpoint.pt to --resume from"):
        Trainer(graph(), data, cfg(tmp_path / "r"))


def test_overwrite_deletes_only_ktgfast_run_files(tmp_path, data):
    Trainer(graph(), data, cfg(tmp_path / "r", tensorboard=True)).fit()
    (tmp_path / "r" / "notes.txt").write_text("mine")
    assert any((tmp_path / "r" / "tb").iterdir())
    tr = Trainer(graph(), data, cfg(tmp_path / "r", epochs=2), overwrite=True)
    assert not (tmp_path / "r" / "checkpoint.pt").exists()
    assert (tmp_path / "r" / "notes.txt").read_text() == "mine"
    tr.fit()
    assert ckpt.load(tmp_path / "r" / "checkpoint.pt")["epoch"] == 2
    with pytest.raises(ValueError, match="contradict"):
        Trainer(graph(), data, cfg(tmp_path / "r"), resume=True, overwrite=True)


def test_resume_refuses_a_math_field_naming_both_values(tmp_path, data):
    Trainer(graph(), data, cfg(tmp_path / "r")).fit()
    with pytest.raises(rules.RunFolderError, match=r"config\.lr \(--lr\) is 0\.1 .* trained with 0\.05"):
        Trainer(graph(), data, cfg(tmp_path / "r", lr=0.1), resume=True)
    with pytest.raises(rules.RunFolderError, match=r"config\.batch_size .* 16 .* 32"):
        Trainer(graph(), data, cfg(tmp_path / "r", batch_size=16), resume=True)


def test_resume_refuses_other_data_content_and_other_graph(tmp_path, data):
    Trainer(graph(), data, cfg(tmp_path / "r")).fit()
    other = tiny_data(seed=1)
    assert other.name == data.name
    with pytest.raises(rules.RunFolderError, match="fingerprint"):
        Trainer(graph(), other, cfg(tmp_path / "r", epochs=2), resume=True)
    from ktgfast.graph import get_preset

    with pytest.raises(rules.RunFolderError, match="different graph"):
        Trainer(get_preset("dml", model="cnn_small"), data, cfg(tmp_path / "r", epochs=2), resume=True)


def test_resume_records_changed_fields(tmp_path, data):
    Trainer(graph(), data, cfg(tmp_path / "r")).fit()
    tr = Trainer(graph(), data, cfg(tmp_path / "r", epochs=2, log_every=7), resume=True)
    assert tr.config_changes == {"epochs": (1, 2), "log_every": (50, 7)}
    tr.fit()
    saved = yaml.safe_load((tmp_path / "r" / "config.yaml").read_text())["config"]
    assert saved["epochs"] == 2 and saved["log_every"] == 7
    resumes = yaml.safe_load((tmp_path / "r" / "resumes.yaml").read_text())["resumes"]
    assert len(resumes) == 1 and resumes[0]["at_epoch"] == 1
    assert resumes[0]["changed"] == {"epochs": {"was": 1, "now": 2}, "log_every": {"was": 50, "now": 7}}
    assert ckpt.load(tmp_path / "r" / "checkpoint.pt")["resumes"] == resumes


@pytest.mark.slow
def test_cli_resume_of_a_finished_run_trains_nothing(tmp_path, capsys):
    assert cli(cli_args(tmp_path / "r", "--epochs", "1")) == 0
    capsys.readouterr()
    # no --epochs, no --graph / --data / --lr: all from the run (not the 200-epoch default)
    assert cli(["train", "--out", str(tmp_path / "r"), "--resume"]) == 0
    out = capsys.readouterr().out
    assert "is finished (1 of 1 periods)" in out and "epoch   2" not in out
    assert ckpt.load(tmp_path / "r" / "checkpoint.pt")["epoch"] == 1
    assert cli(["train", "--out", str(tmp_path / "r"), "--resume", "--epochs", "2"]) == 0
    assert ckpt.load(tmp_path / "r" / "checkpoint.pt")["epoch"] == 2
    assert cli(["train", "--out", str(tmp_path / "r"), "--resume", "--lr", "0.3"]) == 2
    assert "--lr is 0.3 but the run was trained with 0.05" in capsys.readouterr().err


def test_stale_temporary_files_are_removed_on_start(tmp_path, data):
    Trainer(graph(), data, cfg(tmp_path / "r")).fit()
    litter = [".checkpoint.pt.k2j3h4.tmp", ".metrics.csv.tmp", ".config.yaml.tmp"]
    for name in litter:
        (tmp_path / "r" / name).write_bytes(b"half")
    (tmp_path / "r" / "keep.tmp").write_text("not ours")
    Trainer(graph(), data, cfg(tmp_path / "r", epochs=2), resume=True).fit()
    names = {p.name for p in (tmp_path / "r").iterdir()}
    assert not names & set(litter) and "keep.tmp" in names


def test_search_refuses_a_new_study_in_a_folder_with_another_studys_trials(tmp_path):
    s = SearchSettings(space="ktg-4gates-3nodes", data="synthetic", study="s", out=str(tmp_path))
    study = optuna.create_study(direction="maximize")
    _check_study_folder(study, s)  # no folder: fine
    (s.study_dir() / "trials" / "00000").mkdir(parents=True)
    with pytest.raises(ValueError, match="holds the results of another study"):
        _check_study_folder(study, s)
    study.set_user_attr("settings", {"space": "x"})  # the same study, resumed: fine
    _check_study_folder(study, s)


@pytest.mark.slow
def test_sigkill_mid_run_then_resume(tmp_path):
    """A real ``ktgfast train`` killed with SIGKILL after its first checkpoint:
    a new run is refused in its folder, --resume continues it and records the
    epochs change, and the killed run's litter is gone."""
    out = tmp_path / "r"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "ktgfast.cli", *cli_args(out, "--epochs", "500")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        for line in proc.stdout:  # the epoch line is printed after the checkpoint is saved
            if line.startswith("epoch "):
                break
        else:
            pytest.fail("the run ended before its first epoch line")
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    (out / ".checkpoint.pt.dead.tmp").write_bytes(b"PK half")  # what a kill mid-save leaves
    epoch = ckpt.load(out / "checkpoint.pt")["epoch"]
    assert 1 <= epoch < 500
    fresh = subprocess.run(cmd, capture_output=True, text=True, env=env)
    assert fresh.returncode == 2 and "already holds a run" in fresh.stderr
    again = subprocess.run([sys.executable, "-m", "ktgfast.cli", "train", "--out", str(out), "--resume",
                            "--epochs", str(epoch + 1)], capture_output=True, text=True, env=env)
    assert again.returncode == 0, again.stderr
    assert "resumed" in again.stdout and "epochs 500 -> " in again.stdout
    state = ckpt.load(out / "checkpoint.pt")
    assert state["epoch"] == epoch + 1
    with open(out / "metrics.csv") as f:
        assert [int(r["epoch"]) for r in csv.DictReader(f)] == list(range(1, epoch + 2))
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    resumes = yaml.safe_load((out / "resumes.yaml").read_text())["resumes"]
    assert resumes[-1]["changed"]["epochs"] == {"was": 500, "now": epoch + 1}
