"""ktgfast.bench: suites declared next to their benchmarks, the report on
recorded runs of every suite, goals, --check, --compare, suite selection."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from ktgfast.bench import discover, report_suite, timing
from ktgfast.bench.cli import main
from ktgfast.bench.report import load, rows_of
from ktgfast.bench.suites import suite_of_json

FIX = Path(__file__).parent / "fixtures" / "bench"
SUITES = ["attention_crop", "gated_edge_loss", "loaders", "node_parallel", "pcgrad", "train_step"]  # with recorded runs


@pytest.fixture(scope="module")
def suites():
    return discover()


def test_every_suite_declares_itself(suites):
    assert set(SUITES) <= set(suites)  # and any newer suite: checked below, its fixture is its own
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


def median_of(data: dict, group: str, impl: str) -> float:
    (m,) = [b["stats"]["median"] for b in data["benchmarks"]
            if b["group"] == group and b["extra_info"]["impl"] == impl]
    return m


TRAIN_GROUP = "train-step (3x ResNet-20 DML, batch 64, cpu)"
WEAK = "loaders, cpu, 32x32x3, batch 128, weak"
# The (group, reference) pairs each suite's goal patterns select in its recorded run.
GOAL_PAIRS = {
    "gated_edge_loss": {("full M=4 C=100", "per_edge_loop"), ("full M=4 C=100", "reference_compiled")},
    "attention_crop": {(g, r) for g in ("abn16 mixed M=4", "resnet8 mixed M=4")
                       for r in ("per_sample_loop", "vectorised")},
    "loaders": {(WEAK, "torch"), (WEAK, "dali")},
    "train_step": {(TRAIN_GROUP, "public_style_fp32"), (TRAIN_GROUP, "bare_models_fp32")},
    "pcgrad": set(),
    "node_parallel": set(),
}


@pytest.mark.parametrize("name", SUITES)
def test_goal_values(suites, name):
    """Every goal: the ratio of the two medians in the JSON, met iff >= its minimum."""
    s = suites[name]
    data = load(FIX / f"cpu_{name}.json")
    rep = report_suite(s, data)
    assert {(g.group, g.ref) for g in rep.goals} == GOAL_PAIRS[name]
    for g in rep.goals:
        want = median_of(data, g.group, g.ref) / median_of(data, g.group, s.ktgfast)
        assert g.ratio == pytest.approx(want, rel=1e-12)
        assert g.met is (want >= g.minimum)
        assert f"= {want:.2f}× (goal >= {g.minimum}×): {'met' if g.met else 'MISSED'}" in rep.text
    assert rep.missed is any(g.met is False for g in rep.goals)


def scaled(name: str, impl: str, factor: float, tmp_path) -> Path:
    """A copy of a recorded run with ``impl``'s medians times ``factor``."""
    data = load(FIX / f"cpu_{name}.json")
    for b in data["benchmarks"]:
        if b["extra_info"]["impl"] == impl:
            b["stats"]["median"] *= factor
    p = tmp_path / f"{name}_x{factor}.json"
    p.write_text(json.dumps(data))
    return p


def test_not_measured_goal_is_not_missed(suites):
    data = load(FIX / "cpu_gated_edge_loss.json")
    data["benchmarks"] = [b for b in data["benchmarks"] if b["extra_info"]["impl"] != "reference_compiled"]
    rep = report_suite(suites["gated_edge_loss"], data)
    assert [g.ratio for g in rep.goals if g.ref == "reference_compiled"] == [None]
    assert "not measured" in rep.text and not rep.missed


@pytest.mark.parametrize("name", SUITES)
def test_check_exit_codes(suites, name, tmp_path, capsys):
    s = suites[name]
    data = load(FIX / f"cpu_{name}.json")
    minimum = {x["ref"]: x["min"] for x in s.goals}  # one minimum per reference in every suite
    missed = any(median_of(data, g, r) / median_of(data, g, s.ktgfast) < minimum[r] for g, r in GOAL_PAIRS[name])
    assert main(["--from-json", str(FIX / f"cpu_{name}.json"), "--check"]) == int(missed)
    assert main(["--from-json", str(FIX / f"cpu_{name}.json")]) == 0  # without --check: report only
    if s.goals:  # ktgfast 1000x slower misses every goal, 1000x faster meets every goal
        assert main(["--from-json", str(scaled(name, s.ktgfast, 1e3, tmp_path)), "--check"]) == 1
        assert main(["--from-json", str(scaled(name, s.ktgfast, 1e-3, tmp_path)), "--check"]) == 0


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


def test_bf16_row_is_explained_not_an_error(suites, tmp_path):
    data = load(FIX / "cpu_train_step.json")
    want = median_of(data, TRAIN_GROUP, "ktgfast_bf16") / median_of(data, TRAIN_GROUP, "ktgfast_fp32")
    data["machine_info"]["ktgfast"]["isa"] = ["avx2", "avx512f"]  # no native bf16
    rep = report_suite(suites["train_step"], data)
    (note,) = rep.notes
    assert "neither avx512_bf16 nor amx_bf16" in note and "emulated" in note and "not an error" in note
    assert f"{want:.2f}× the time of ktgfast, fp32" in note
    assert not any("bf16" in w for w in rep.warnings) and "Notes:" in rep.text
    data["machine_info"]["ktgfast"]["isa"] = ["avx2", "avx512f", "avx512_bf16", "amx_bf16"]
    (note,) = report_suite(suites["train_step"], data).notes
    assert "native bf16 (avx512_bf16, amx_bf16)" in note
    data["machine_info"]["ktgfast"]["device"] = "cuda"
    (note,) = report_suite(suites["train_step"], data).notes
    assert "on the GPU" in note
    # a bf16 row far slower than fp32 (emulated bf16) misses no goal: --check looks at the goals only
    data = load(scaled("train_step", "ktgfast_bf16", 15.0, tmp_path))
    assert report_suite(suites["train_step"], data).missed == report_suite(
        suites["train_step"], load(FIX / "cpu_train_step.json")).missed


def test_memory_column_where_measured(suites):
    data = load(FIX / "cpu_pcgrad.json")
    rep = report_suite(suites["pcgrad"], data)
    assert "Memory: not measured: the implementations of a group share one process" in rep.text
    assert "peak MiB" not in rep.text and "clock: perf_counter" in rep.text
    # a run whose timer measured memory (CUDA): a column per row
    data["machine_info"]["ktgfast"].update(device="cuda", timer=timing.CudaEvents.name,
                                           memory=timing.CudaEvents.memory)
    for i, b in enumerate(data["benchmarks"]):
        b["extra_info"]["peak_memory_bytes"] = (i + 1) * 2**20
    rep = report_suite(suites["pcgrad"], data)
    assert "peak MiB" in rep.text and "Memory: peak CUDA memory allocated during a call" in rep.text
    assert all(f"  {i + 1}.0" in rep.text for i in range(len(data["benchmarks"])))


def test_rows_not_interleaved_are_flagged(suites):
    data = load(FIX / "cpu_gated_edge_loss.json")
    assert not any("interleaved" in w for w in report_suite(suites["gated_edge_loss"], data).warnings)
    data["benchmarks"][0]["extra_info"].pop("interleaved")
    rep = report_suite(suites["gated_edge_loss"], data)
    assert any("not timed interleaved" in w and data["benchmarks"][0]["extra_info"]["impl"] in w
               for w in rep.warnings)
    assert "not all interleaved" in rep.text


def test_markdown_into_a_readme(tmp_path, capsys):
    md = tmp_path / "README.md"
    md.write_text("# B\n\nprose\n<!-- ktgfast bench: pcgrad -->\nold table\n"
                  "<!-- /ktgfast bench: pcgrad -->\ntail\n")
    assert main(["--from-json", str(FIX / "cpu_pcgrad.json"), "--markdown-into", str(md)]) == 0
    text = md.read_text()
    assert "old table" not in text and text.startswith("# B\n\nprose\n<!-- ktgfast bench: pcgrad -->\n### ")
    assert text.endswith("<!-- /ktgfast bench: pcgrad -->\ntail\n") and "| implementation | median ms |" in text
    again = text
    assert main(["--from-json", str(FIX / "cpu_pcgrad.json"), "--markdown-into", str(md)]) == 0
    assert md.read_text() == again  # idempotent
    # a suite without its markers: refused before anything runs
    capsys.readouterr()
    assert main(["--from-json", str(FIX / "cpu_loaders.json"), "--markdown-into", str(md)]) == 2
    err = capsys.readouterr().err
    assert "no section for suite 'loaders'" in err and "<!-- ktgfast bench: loaders -->" in err


def test_readme_tables_come_from_the_fixtures(suites):
    """benchmarks/README.md holds, for every suite, the Markdown report of
    the recorded run in tests/fixtures/bench (regenerated, not pasted)."""
    from ktgfast.bench.markdown import begin, end

    text = (FIX.parents[2] / "benchmarks" / "README.md").read_text()
    for name in SUITES:
        body = text[text.index(begin(name)) + len(begin(name)):text.index(end(name))].strip()
        want = report_suite(suites[name], load(FIX / f"cpu_{name}.json"), markdown=True).text.strip()
        assert body == want, f"benchmarks/README.md: the {name} tables differ from the fixture's report"


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
    # timed interleaved, every round visiting every row; faster rows repeat within a round
    assert all(b["extra_info"]["interleaved"] for b in data["benchmarks"])
    rounds = {b["extra_info"]["impl"]: b["stats"]["rounds"] for b in data["benchmarks"]}
    assert rounds["per_pair_loop"] >= 5 and rounds["ktgfast"] >= rounds["per_pair_loop"]
    assert all(b["extra_info"]["timer"] == "perf_counter" and b["extra_info"]["peak_memory_bytes"] is None
               for b in data["benchmarks"])
    assert k["timer"] == "perf_counter" and k["memory"].startswith("not measured")
    assert k["bench_env"]["KTGFAST_BENCH_ROUNDS"] == "1"  # --quick is recorded
    assert "Memory: not measured" in out


def test_plot_next_to_the_json(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    p = tmp_path / "cpu_attention_crop.json"
    p.write_text((FIX / "cpu_attention_crop.json").read_text())
    assert main(["--from-json", str(p), "--plot"]) == 0
    png = tmp_path / "cpu_attention_crop.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"picture: {png}" in capsys.readouterr().out


def test_time_interleaved_rotates_the_order():
    calls = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "abc"}
    t = timing.time_interleaved(fns, rounds=4, warmup_rounds=1)
    assert calls == list("abc" + "abc" + "bca" + "cab" + "abc")  # warm-up, then rotated rounds
    assert {n: len(s) for n, s in t.samples.items()} == {"a": 4, "b": 4, "c": 4}
    assert all(x >= 0 for s in t.samples.values() for x in s)
    assert t.timer == "perf_counter" and t.peak_bytes == {"a": None, "b": None, "c": None}


def test_repeats_stay_inside_the_rounds():
    calls = []
    fns = {n: (lambda n=n: calls.append(n)) for n in "ab"}
    t = timing.time_interleaved(fns, rounds=2, warmup_rounds=0, repeats={"a": 3})
    assert calls == list("aaab" + "baaa")
    assert {n: len(s) for n, s in t.samples.items()} == {"a": 6, "b": 2}


def test_budget_plan():
    calls = {"fast": 0, "slow": 0}

    def work(name, n):
        def fn():
            calls[name] += 1
            sum(range(n))
        return fn

    fns = {"fast": work("fast", 1000), "slow": work("slow", 200_000)}
    assert timing.Budget(rounds=4).plan(fns) == (4, {"fast": 1, "slow": 1})
    assert calls == {"fast": 0, "slow": 0}  # fixed rounds, no repeats: nothing probed
    rounds, repeats = timing.Budget(rounds=3, probe_calls=1, max_repeats=10).plan(fns)
    assert rounds == 3 and repeats["slow"] == 1 and 1 <= repeats["fast"] <= 10
    rounds, _ = timing.Budget(seconds=0.0, min_rounds=5, max_rounds=7).plan(fns)
    assert rounds == 5


def test_timer_follows_the_device(monkeypatch):
    import torch

    assert isinstance(timing.timer_for("cpu"), timing.WallClock)
    with pytest.raises(ValueError, match="'tpu'.*cpu, cuda"):
        timing.timer_for("tpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(RuntimeError, match="is_available"):
        timing.timer_for("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert isinstance(timing.timer_for("cuda"), timing.CudaEvents)
    assert isinstance(timing.timer_for("cuda:1"), timing.CudaEvents)


def test_cpu_timing_never_touches_cuda(monkeypatch):
    import torch

    def no_cuda(*a, **k):
        raise AssertionError("the CPU path called torch.cuda")

    for name in ("synchronize", "reset_peak_memory_stats", "max_memory_allocated", "memory_allocated", "Event"):
        monkeypatch.setattr(torch.cuda, name, no_cuda)
    t = timing.time_group({"a": lambda: None, "b": lambda: None}, timing.Budget(seconds=0.0, min_rounds=2),
                          "cpu")
    assert {n: len(s) for n, s in t.samples.items()} == {"a": 2, "b": 2}
    assert set(t.peak_bytes.values()) == {None}


class RecordingCuda:
    """Stands in for ``torch.cuda`` to check the order of the CUDA event
    timer's calls (what is synchronised before and after), not its numbers."""

    def __init__(self):
        self.log = []
        self.allocated = 100

    def synchronize(self):
        self.log.append("synchronize")

    def memory_allocated(self):
        return self.allocated

    def reset_peak_memory_stats(self):
        self.log.append("reset_peak")

    def max_memory_allocated(self):
        self.log.append("max_memory")
        return self.allocated + 50

    def Event(self, enable_timing=False):
        assert enable_timing
        cuda = self

        class Ev:
            def record(self):
                cuda.log.append("record")

            def synchronize(self):
                cuda.log.append("event_synchronize")

            def elapsed_time(self, other):
                cuda.log.append("elapsed")
                return 2.0  # ms

        return Ev()


def test_cuda_event_timer_synchronises_around_the_call():
    timer = timing.CudaEvents.__new__(timing.CudaEvents)  # no GPU here: its torch.cuda is replaced
    timer.cuda = RecordingCuda()
    seconds, peak = timer.measure(lambda: timer.cuda.log.append("fn"))
    assert timer.cuda.log == ["synchronize", "reset_peak", "record", "fn", "record", "event_synchronize",
                              "elapsed", "max_memory"]
    assert seconds == pytest.approx(2e-3) and peak == 50  # ms -> s; peak over what was allocated before


def test_groups_time_a_group_once(monkeypatch):
    import importlib.util
    import sys

    path = FIX.parents[2] / "benchmarks" / "interleave.py"
    spec = importlib.util.spec_from_file_location("bench_interleave", path)
    mod = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, mod)  # its dataclass looks itself up there
    spec.loader.exec_module(mod)
    prepared = []

    def prepare():
        prepared.append(1)
        return {"a": lambda: None, "b": lambda: None}, {"a": {"images_per_round": 10}, "b": {}}

    groups = mod.Groups(timing.Budget(rounds=3, warmup_rounds=0))
    t1, info = groups.get("g", prepare)
    t2, _ = groups.get("g", prepare)
    assert prepared == [1] and t1 is t2 and len(t1.samples["a"]) == 3 and info["a"]["images_per_round"] == 10


def test_device_cuda_without_cuda_is_one_clear_error(monkeypatch, capsys):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr("ktgfast.bench.cli._run_suite", lambda *a, **k: pytest.fail("a suite was run"))
    assert main(["pcgrad", "--device", "cuda"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: --device cuda: torch.cuda.is_available() is False")


def test_ktgfast_bench_subcommand_lists_the_suites(capsys):
    from ktgfast.cli import main as ktgfast_main

    assert ktgfast_main(["bench", "--list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in ("gated_edge_loss", "attention_crop", "pcgrad", "train_step",
                                        "loaders"))
