"""ktgfast.bench: suites declared next to their benchmarks, the report on
recorded runs of every suite, goals, --check, --compare, suite selection."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from ktgfast.bench import discover, report_suite
from ktgfast.bench.cli import main
from ktgfast.bench.report import load, rows_of
from ktgfast.bench.suites import suite_of_json

FIX = Path(__file__).parent / "fixtures" / "bench"
SUITES = ["attention_crop", "gated_edge_loss", "loaders", "pcgrad", "train_step"]


@pytest.fixture(scope="module")
def suites():
    return discover()


def test_every_suite_declares_itself(suites):
    assert sorted(suites) == SUITES
    for s in suites.values():
        assert s.path.name == f"test_bench_{s.name}.py"
        assert s.references and s.ktgfast not in s.references
        for g in s.goals:
            assert g["ref"] in s.references and g["min"] > 0


@pytest.mark.parametrize("name", SUITES)
def test_report_recognises_every_row(suites, name):
    data = load(FIX / f"cpu_{name}.json")
    s = suite_of_json(data, suites)
    assert s is suites[name]
    rep = report_suite(s, data)
    assert rep.unrecognised == []
    impls = {i for med in rows_of(data).values() for i in med}
    assert impls >= set(s.references) | {s.ktgfast}
    for impl in impls:
        assert s.label(impl) in rep.text
    assert len(rep.goals) >= len(s.goals)
    assert all(g.ratio is not None for g in rep.goals)  # every declared goal measured


def test_goal_values(suites):
    rep = report_suite(suites["gated_edge_loss"], load(FIX / "cpu_gated_edge_loss.json"))
    got = {(g.group, g.ref): (round(g.ratio, 2), g.met) for g in rep.goals}
    assert got == {("full M=4 C=100", "per_edge_loop"): (15.7, True),
                   ("full M=4 C=100", "reference_compiled"): (2.07, True)}
    assert not rep.missed
    rep = report_suite(suites["attention_crop"], load(FIX / "cpu_attention_crop.json"))
    missed = [(g.group, g.ref) for g in rep.goals if g.met is False]
    assert missed == [("resnet8 mixed M=4", "per_sample_loop"), ("resnet8 mixed M=4", "vectorised")]
    assert rep.missed
    assert "MISSED" in rep.text
    # a wildcard group: the loader goals apply to the weak group only
    rep = report_suite(suites["loaders"], load(FIX / "cpu_loaders.json"))
    assert {g.group for g in rep.goals} == {"loaders, CPU, 32x32x3, batch 128, weak"}


def test_not_measured_goal_is_not_missed(suites):
    data = load(FIX / "cpu_gated_edge_loss.json")
    data["benchmarks"] = [b for b in data["benchmarks"] if b["extra_info"]["impl"] != "reference_compiled"]
    rep = report_suite(suites["gated_edge_loss"], data)
    assert [g.ratio for g in rep.goals if g.ref == "reference_compiled"] == [None]
    assert "not measured" in rep.text and not rep.missed


@pytest.mark.parametrize("name,code", [("gated_edge_loss", 0), ("pcgrad", 0), ("loaders", 0),
                                       ("attention_crop", 1), ("train_step", 1)])
def test_check_exit_codes(name, code, capsys):
    assert main(["--from-json", str(FIX / f"cpu_{name}.json"), "--check"]) == code
    assert main(["--from-json", str(FIX / f"cpu_{name}.json")]) == 0  # without --check: report only


def test_compare(tmp_path, capsys):
    old = load(FIX / "cpu_pcgrad.json")
    new = copy.deepcopy(old)
    for b in new["benchmarks"]:
        b["stats"]["median"] *= 2.0 if b["extra_info"]["impl"] == "ktgfast" else 1.0
    p = tmp_path / "new.json"
    p.write_text(json.dumps(new))
    assert main(["--from-json", str(p), "--compare", str(FIX / "cpu_pcgrad.json")]) == 0
    out = capsys.readouterr().out
    assert "vs baseline" in out and out.count("+100.0%") == 2 and out.count("+0.0%") == 4


def test_markdown_names_the_machine(capsys):
    assert main(["--from-json", str(FIX / "cpu_train_step.json"), "--markdown"]) == 0
    out = capsys.readouterr().out
    assert "| implementation | median ms |" in out and "Machine: " in out and "|---|" in out


def test_bf16_without_native_support_is_explained(suites):
    data = load(FIX / "cpu_train_step.json")
    rep = report_suite(suites["train_step"], data)
    assert any("ktgfast_bf16" in w and "avx512_bf16" in w for w in rep.warnings)
    data["machine_info"]["ktgfast"]["isa"] = ["avx2", "avx512f", "avx512_bf16"]
    assert not any("ktgfast_bf16" in w for w in report_suite(suites["train_step"], data).warnings)


def test_noise_warnings(suites):
    data = load(FIX / "cpu_pcgrad.json")  # a real --quick run on a loaded 2-core machine
    data["machine_info"]["ktgfast"].update(usable_cores=2, load_average_at_start=[3.5, 2, 2],
                                           load_average_at_end=[1.0, 1, 1])
    rep = report_suite(suites["pcgrad"], data)
    assert any("load average 3.50 > 2 cores" in w for w in rep.warnings)
    data["machine_info"]["ktgfast"].update(usable_cores=64, load_average_at_start=[1, 1, 1],
                                           load_average_at_end=[1, 1, 1])
    for b in data["benchmarks"]:
        b["stats"]["iqr"] = 0.01 * b["stats"]["median"]
    assert report_suite(suites["pcgrad"], data).warnings == []


def test_list_and_selection(capsys, monkeypatch):
    assert main(["--list"]) == 0
    out = capsys.readouterr().out
    assert all(n in out for n in SUITES)
    assert main(["no_such_suite"]) == 2
    assert "unknown suite" in capsys.readouterr().err
    ran = []
    monkeypatch.setattr("ktgfast.bench.cli._run_suite",
                        lambda suite, out, quick, device, keyword=None: ran.append((suite.name, quick)) or 0)
    assert main(["pcgrad", "loaders", "--quick"]) == 0
    assert ran == [("pcgrad", True), ("loaders", True)]


def test_needs_a_checkout(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("KTGFAST_BENCH_DIR", str(tmp_path))  # no test_bench_*.py there
    assert main(["--list"]) == 0 and capsys.readouterr().out == ""
    from ktgfast.bench import suites as s

    monkeypatch.delenv("KTGFAST_BENCH_DIR")
    monkeypatch.setattr(s, "__file__", str(tmp_path / "a" / "b" / "suites.py"))
    monkeypatch.chdir(tmp_path)
    assert main(["--list"]) == 2
    assert "needs a source checkout" in capsys.readouterr().err


@pytest.mark.slow
def test_quick_run_of_one_suite(tmp_path, capsys):
    assert main(["pcgrad", "--quick", "-k", "flat", "--json-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    data = load(tmp_path / "cpu_pcgrad_quick.json")
    assert {b["extra_info"]["impl"] for b in data["benchmarks"]} == {"per_pair_loop", "gram_torch", "ktgfast"}
    k = data["machine_info"]["ktgfast"]
    assert k["cpu_model"] and "usable_cores" in k and "isa" in k and k["device"] == "cpu"
    assert "(a) per-pair loop" in out and "ratio to ktgfast" in out
    # timed interleaved: every row of the group got the same number of rounds
    assert all(b["extra_info"]["interleaved"] for b in data["benchmarks"])
    assert len({b["stats"]["rounds"] for b in data["benchmarks"]}) == 1


def test_plot_next_to_the_json(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    p = tmp_path / "cpu_attention_crop.json"
    p.write_text((FIX / "cpu_attention_crop.json").read_text())
    assert main(["--from-json", str(p), "--plot"]) == 0
    png = tmp_path / "cpu_attention_crop.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"picture: {png}" in capsys.readouterr().out


def test_time_interleaved_rotates_the_order():
    import importlib.util

    spec = importlib.util.spec_from_file_location("interleave", FIX.parents[2] / "benchmarks" / "interleave.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    calls = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    samples = mod.time_interleaved(fns, rounds=4, warmup_rounds=1)
    assert calls == list("abc" + "abc" + "bca" + "cab" + "abc")  # warm-up, then rotated rounds
    assert {n: len(s) for n, s in samples.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(t >= 0 for s in samples.values() for t in s)


def test_ktgfast_bench_subcommand_lists_the_suites(capsys):
    from ktgfast.cli import main as ktgfast_main

    assert ktgfast_main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("gated_edge_loss", "attention_crop", "pcgrad", "train_step",
                                        "loaders"))
