"""ktgfast.reproduce: every row of every paper recipe dry-runs (synthetic data
of the dataset's shape, a few steps), ``list`` names every recipe with its
paper and table, the results table is only appended to, a re-run resumes or
refuses as the trainer's run-folder rules say, and bad names are one line."""
from __future__ import annotations

import argparse
import csv
import math

import pytest
import yaml

from ktgfast.graph import get_preset, load_graph, resolve_graph, validate
from ktgfast.models import model_options
from ktgfast.reproduce import RECIPES, RunOptions, run_recipe
from ktgfast.reproduce import cli as reproduce_cli
from ktgfast.reproduce.data import SOURCES
from ktgfast.reproduce.recipe import TARGET
from ktgfast.reproduce.results import COLUMNS, ResultsTable
from ktgfast.reproduce.runner import metrics_of
from ktgfast.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ktgfast reproduce")
    reproduce_cli.add_arguments(p)
    return p


def _cli(*argv: str) -> int:
    return reproduce_cli.run(_parser().parse_args(list(argv)))


def _lines(out) -> list[dict]:
    with open(out / "results.csv", newline="") as f:
        return list(csv.DictReader(f))


# ---------------------------------------------------------------- the tables themselves

def _all_rows():
    for recipe in RECIPES.values():
        rows = ([recipe.teacher] if recipe.teacher is not None else []) + list(recipe.rows)
        for row in rows:
            yield recipe, row


def test_every_row_is_a_valid_recipe():
    """Graphs resolve and validate, configs validate for the row's method,
    paper metrics name accuracies, datasets are known."""
    for recipe, row in _all_rows():
        where = f"{recipe.name}/{row.name}"
        assert recipe.dataset in SOURCES, where
        cfg = TrainConfig.from_dict({**recipe.train, **row.config}, where=where)
        cfg.check_method(row.method)
        if row.method != "distill":
            graph = validate(resolve_graph(row.graph_ref, **row.graph_args), known_models=model_options)
            assert all(n.model != "auto" for n in graph.nodes), f"{where}: models must be the paper's"
        for key, p in row.paper.items():
            assert key == TARGET or key.startswith("test_acc:"), where
            assert 0 < p.mean < 100 and (p.std is None or p.std >= 0), where
        assert row.paper or row.note, f"{where}: no paper number and no note saying why"
    assert len(RECIPES) >= 9


# ------------------------------------------------------------------ dry runs of every row

def _params():
    seen = set()
    for recipe in RECIPES.values():
        large = SOURCES[recipe.dataset].image_size > 64
        for row in recipe.rows:
            first = recipe.name not in seen
            seen.add(recipe.name)
            marks = [] if first and not large else [pytest.mark.slow]
            yield pytest.param(recipe.name, row.name, marks=marks, id=f"{recipe.name}/{row.name}")


@pytest.fixture(scope="module")
def dry_out(tmp_path_factory):
    return tmp_path_factory.mktemp("reproduce")


@pytest.mark.parametrize("recipe_name,row_name", list(_params()))
def test_every_row_dry_runs(recipe_name, row_name, dry_out, capsys):
    recipe = RECIPES[recipe_name]
    row = recipe.row(row_name)
    run_recipe(recipe, RunOptions(out=dry_out, dry_run=True, device="cpu", seeds=(0,), rows=[row_name],
                                  verbose=False))
    mine = [r for r in _lines(dry_out) if r["recipe"] == recipe_name and r["row"] == row_name]
    assert mine, "no results line"
    assert {r["mode"] for r in mine} == {"dry-run"} and {r["seed"] for r in mine} == {"0"}
    for r in mine:
        assert 0.0 <= float(r["ours"]) <= 100.0
    papered = [r for r in mine if r["paper"]]
    assert len(papered) == len(row.paper), "every number the paper prints has ours beside it"
    printed = capsys.readouterr().out
    for p in row.paper.values():
        assert f"{p.mean:.2f}" in printed
    run_dir = dry_out / "dry-run" / recipe_name / row_name / "seed0"
    assert (run_dir / "metrics.csv").is_file() and (run_dir / "config.yaml").is_file()
    saved = yaml.safe_load((run_dir / "config.yaml").read_text())["config"]
    assert saved["seed"] == 0 and saved["device"] == "cpu"
    for key in ("lr", "momentum", "nesterov", "weight_decay"):  # the paper's, even in a dry run
        if key in recipe.train:
            assert saved[key] == {**recipe.train, **row.config}[key], key


# --------------------------------------------------------------------------- list / names

def test_list_shows_every_recipe_with_paper_and_table(capsys):
    assert _cli("list") == 0
    out = capsys.readouterr().out
    for recipe in RECIPES.values():
        assert recipe.name in out and recipe.paper in out
    assert "table 3.2" in out and "table 4.6" in out and "table 4.9" in out and "table 5.3" in out
    assert "table 1" in out and "fig. 1" in out


def test_show_prints_rows_and_differences(capsys):
    assert _cli("ktg-cifar100", "--show") == 0
    out = capsys.readouterr().out
    assert all(r.name in out for r in RECIPES["ktg-cifar100"].rows)
    assert "72.88 ± 0.41" in out and "differs from the paper" in out and "stand-in" in out


def test_bad_names_are_one_line_with_the_allowed_ones(tmp_path):
    with pytest.raises(ValueError) as e:
        _cli("ktg-cifar1000", "--out", str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and "'ktg-cifar1000'" in msg
    assert all(name in msg for name in RECIPES) and "list" in msg
    with pytest.raises(ValueError) as e:
        _cli("ktg-cifar100", "--rows", "vanilla,dml", "--dry-run", "--out", str(tmp_path))
    assert "\n" not in str(e.value) and "'dml'" in str(e.value) and "dml-r32-r32" in str(e.value)
    with pytest.raises(ValueError, match="ROW=FILE"):
        _cli("ktg-cifar100", "--graph", "nofile", "--dry-run", "--out", str(tmp_path))
    assert not (tmp_path / "results.csv").exists(), "nothing trained before the error"
    with pytest.raises(SystemExit):
        _parser().parse_args(["ktg-cifar100", "--seeds", "x"])
    with pytest.raises(SystemExit):
        _parser().parse_args(["ktg-cifar100", "--seeds", "1,1"])
    assert _parser().parse_args(["x", "--seeds", "3"]).seeds == (3,)
    assert _parser().parse_args(["x", "--seeds", "0,4"]).seeds == (0, 4)
    assert _parser().parse_args(["x", "--seeds", "0-2,7"]).seeds == (0, 1, 2, 7)


# ------------------------------------------------------------- results table and re-runs

@pytest.mark.slow
def test_results_append_and_reruns_resume_or_refuse(tmp_path, capsys):
    out = tmp_path / "out"
    args = ("vanilla-cifar100", "--rows", "resnet32", "--dry-run", "--device", "cpu", "--quiet",
            "--out", str(out))
    assert _cli(*args, "--seeds", "0,1") == 0
    first = (out / "results.csv").read_bytes()
    lines = _lines(out)
    assert sorted({r["seed"] for r in lines}) == ["0", "1"]
    # the same command again: both runs are recorded, nothing is trained or written
    capsys.readouterr()
    assert _cli(*args, "--seeds", "0,1") == 0
    assert "already in" in capsys.readouterr().out
    assert (out / "results.csv").read_bytes() == first
    # a new seed appends; the earlier lines stay byte for byte
    assert _cli(*args, "--seeds", "2") == 0
    now = (out / "results.csv").read_bytes()
    assert now.startswith(first) and len(now) > len(first)
    assert {r["seed"] for r in _lines(out)} == {"0", "1", "2"}
    # a finished run that is not in the table (e.g. killed before recording) is
    # resumed from its checkpoint: its numbers come back without training again
    seed0 = {r["metric"]: r["ours"] for r in _lines(out) if r["seed"] == "0"}
    (out / "results.csv").rename(tmp_path / "old.csv")
    assert _cli(*args, "--seeds", "0") == 0
    again = {r["metric"]: r["ours"] for r in _lines(out)}
    assert again == seed0
    # a folder holding run files but no checkpoint is refused by the trainer's rules
    bad = out / "dry-run" / "vanilla-cifar100" / "resnet32" / "seed5"
    bad.mkdir(parents=True)
    (bad / "metrics.csv").write_text("epoch\n1\n")
    with pytest.raises(ValueError, match="seed5"):
        _cli(*args, "--seeds", "5")


def test_a_foreign_results_file_is_refused_not_rewritten(tmp_path):
    (tmp_path / "results.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="not a ktgfast reproduce results table"):
        ResultsTable(tmp_path)
    assert (tmp_path / "results.csv").read_text() == "a,b\n1,2\n"
    t = ResultsTable(tmp_path / "new")
    t.append([dict(recipe="r", row="x", seed=0, metric="test_acc:a", ours=1.0)])
    t.append([dict(recipe="r", row="x", seed=1, metric="test_acc:a", ours=2.0)])
    rows = t.rows()
    assert [r["seed"] for r in rows] == ["0", "1"] and list(rows[0]) == list(COLUMNS)


def test_a_searched_graph_replaces_a_row(tmp_path):
    path = tmp_path / "best_graph.yaml"
    path.write_text(yaml.safe_dump(get_preset("vanilla", model="resnet20").to_dict()))
    assert _cli("vanilla-cifar100", "--rows", "resnet32", "--graph", f"resnet32={path}", "--dry-run",
                "--device", "cpu", "--quiet", "--seeds", "1", "--out", str(tmp_path / "o")) == 0
    lines = _lines(tmp_path / "o")
    assert {r["graph_source"] for r in lines} == {"user"} and {r["graph"] for r in lines} == {str(path)}
    assert load_graph(path).nodes[0].model == "resnet20"


# ------------------------------------------------------------------------------ helpers

def test_metrics_of_a_run():
    ktg = metrics_of({"epoch": 3, "test_acc:node1": 70.0, "test_acc:node2": 74.0,
                      "test_acc:ensemble": 75.0, "val_acc:node1": 1.0}, "ktg")
    assert ktg == {"test_acc:node1": 70.0, "test_acc:node2": 74.0, "test_acc:ensemble": 75.0,
                   "test_acc:node_mean": 72.0, "test_acc:best": 74.0}
    one = metrics_of({"test_acc:student": 60.0, "test_acc:ensemble": 60.0}, "distill")
    assert one == {"test_acc:student": 60.0, "test_acc:ensemble": 60.0}
    gens = metrics_of({"generations": [{"generation": 1, "test_acc": 50.0},
                                       {"generation": 2, "test_acc": 52.5}]}, "self-distill")
    assert gens == {"test_acc:gen1": 50.0, "test_acc:gen2": 52.5}
    assert not math.isnan(sum(gens.values()))


def test_stanford_dogs_layout_follows_the_official_lists(tmp_path):
    np = pytest.importorskip("numpy")
    sio = pytest.importorskip("scipy.io")
    from PIL import Image

    from ktgfast.data import get_dataset
    from ktgfast.reproduce.stanford_dogs import prepare

    src = tmp_path / "src"
    files = {"train": ["b1/t1.jpg", "b1/t2.jpg", "b2/t3.jpg", "b2/t4.jpg"], "test": ["b1/s1.jpg", "b2/s2.jpg"]}
    for split, names in files.items():
        for name in names:
            (src / "Images" / name).parent.mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (40, 30), (int(name[-5]) * 30, 0, 0)).save(src / "Images" / name)
        cell = np.empty((len(names), 1), dtype=object)
        for i, n in enumerate(names):
            cell[i, 0] = np.array([n])
        (src / "lists").mkdir(exist_ok=True)
        sio.savemat(src / "lists" / f"{split}_list.mat", {"file_list": cell})
    with pytest.raises(ValueError, match="12000"):
        prepare(src, tmp_path / "strict")
    counts = prepare(src, tmp_path / "dogs", strict=False)
    assert counts == {"train": 4, "test": 2}
    ds = get_dataset("imagefolder", root=str(tmp_path / "dogs"), image_size=16)
    assert ds.num_classes == 2 and len(ds.train) == 4 and len(ds.test) == 2
    with pytest.raises(ValueError, match="exists"):
        prepare(src, tmp_path / "dogs", strict=False)
