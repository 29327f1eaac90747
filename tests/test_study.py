"""scripts/study.py (the evidence page): its statistics on hand-computed
numbers, the resume of results.csv, and a dry run of one comparison."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
import study  # noqa: E402
import study_stats as st  # noqa: E402


# ------------------------------------------------------------------ statistics
def test_paired_ci_by_hand():
    # d = (1, 2, 3): mean 2, sd 1, n 3, t_{0.975,2} = 4.303 -> half width 4.303 / sqrt(3) = 2.4843
    p = st.paired_ci([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
    assert p.n == 3 and p.mean == pytest.approx(2.0)
    assert p.low == pytest.approx(2 - 2.4843, abs=1e-3) and p.high == pytest.approx(2 + 2.4843, abs=1e-3)
    assert p.verdict == st.NOT_RESOLVED


def test_verdicts():
    assert st.paired_ci([12.0, 13.0, 14.0], [10.0, 10.0, 10.0]).verdict == st.HOLDS      # [0.52, 5.48]
    assert st.paired_ci([10.0, 10.0, 10.0], [12.0, 13.0, 14.0]).verdict == st.REVERSED  # [-5.48, -0.52]
    assert st.paired_ci([1.0, -1.0, 2.0], [0.0, 0.0, 0.0]).verdict == st.NOT_RESOLVED
    one = st.paired_ci([5.0], [1.0])
    assert one.mean == 4.0 and math.isnan(one.low) and one.verdict == st.NOT_RESOLVED
    assert st.verdict(0.0, 1.0) == st.NOT_RESOLVED  # an interval touching 0 does not hold


def test_t_table_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    for df in (1, 2, 4, 10, 30):
        assert st.T975[df - 1] == pytest.approx(stats.t.ppf(0.975, df), abs=1e-3)


def test_paired_needs_pairs_and_mean_std():
    with pytest.raises(ValueError, match="paired"):
        st.paired_ci([1.0, 2.0], [1.0])
    assert st.mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0)
    assert st.mean_std([4.0]) == (4.0, 0.0)


def test_select_uses_validation_first_on_ties():
    hist = [{"epoch": 1, "val_acc:n": 90.0, "test_acc:n": 99.0},
            {"epoch": 2, "val_acc:n": 95.0, "test_acc:n": 91.0},
            {"epoch": 3, "val_acc:n": 95.0, "test_acc:n": 98.0}]
    assert study.select(hist, "n") == {"val": 95.0, "test": 91.0, "selected": "epoch 2"}


# ------------------------------------------------------------------ resume
def stub_job(name: str, arm: str, calls: list, score: float) -> study.Job:
    def fn(seed, ctx):
        calls.append((name, seed))
        return {arm: {"val": score, "test": score + seed, "selected": "epoch 1"}}
    return study.Job(name, (arm,), fn)


def test_finished_arm_seed_is_not_rerun(tmp_path):
    calls: list = []
    comp = study.Comparison("c", "A > B", [("A", "B")],
                            [stub_job("runA", "A", calls, 90.0), stub_job("runB", "B", calls, 80.0)])
    csv_path = tmp_path / "results.csv"
    assert study.run_comparison(comp, [0], None, "1 ep", csv_path, log=lambda _: None) == "done"
    assert calls == [("runA", 0), ("runB", 0)]
    calls.clear()
    study.run_comparison(comp, [0, 1], None, "1 ep", csv_path, log=lambda _: None)
    assert calls == [("runA", 1), ("runB", 1)]  # seed 0 came from results.csv
    calls.clear()
    study.run_comparison(comp, [0, 1], None, "1 ep", csv_path, log=lambda _: None)
    assert calls == []
    study.run_comparison(comp, [0], None, "2 ep", csv_path, log=lambda _: None)
    assert calls == [("runA", 0), ("runB", 0)]  # another budget is another result
    rows = study.read_results(csv_path)
    assert len(rows) == 6 and {(r["arm"], r["seed"], r["test"]) for r in rows if r["budget"] == "1 ep"} == {
        ("A", 0, 90.0), ("B", 0, 80.0), ("A", 1, 91.0), ("B", 1, 81.0)}


def test_same_run_in_another_comparison_is_copied(tmp_path):
    calls: list = []
    first = study.Comparison("c1", "A > B", [("A", "B")],
                             [stub_job("runA", "A", calls, 90.0), stub_job("runB", "B", calls, 80.0)])
    second = study.Comparison("c2", "C > A'", [("C", "A'")],
                              [stub_job("runA", "A'", calls, 0.0), stub_job("runC", "C", calls, 70.0)])
    csv_path = tmp_path / "results.csv"
    study.run_comparison(first, [0], None, "1 ep", csv_path, log=lambda _: None)
    calls.clear()
    study.run_comparison(second, [0], None, "1 ep", csv_path, log=lambda _: None)
    assert calls == [("runC", 0)]
    copied = [r for r in study.read_results(csv_path) if r["arm"] == "A'"]
    assert len(copied) == 1 and copied[0]["test"] == 90.0 and copied[0]["wall_s"] == 0.0
    rows = study.read_results(csv_path)
    assert study.table_rows(rows, second)[0]["paired"].mean == pytest.approx(-20.0)


def test_deadline_stops_before_a_job(tmp_path):
    calls: list = []
    comp = study.Comparison("c", "A > B", [("A", "B")], [stub_job("runA", "A", calls, 1.0)])
    state = study.run_comparison(comp, [0], None, "1 ep", tmp_path / "r.csv", deadline=0.0,
                                 log=lambda _: None)
    assert calls == [] and state.startswith("stopped")


def test_a_needed_run_is_planned_and_runs_first(tmp_path):
    """A job that needs another (distillation needs the seed's teachers) gets
    it trained first, under the comparison that owns it, even when that
    comparison was not selected; a second need of the same run is not retrained."""
    calls: list = []
    teach = stub_job("teach", "T", calls, 50.0)
    owner = study.Comparison("own", "T > U", [("T", "U")], [teach])
    student = study.Job("stu", ("S",), stub_job("stu", "S", calls, 60.0).fn, needs=("teach",))
    other = study.Job("stu2", ("S2",), stub_job("stu2", "S2", calls, 70.0).fn, needs=("teach",))
    comp = study.Comparison("c", "S > S2", [("S", "S2")], [student, other])
    csv_path = tmp_path / "r.csv"
    state = study.run_all([comp], [0, 1], lambda _: "1 ep", csv_path, [owner, comp], ctx=None,
                          log=lambda _: None)
    assert state == {"c": "done"}
    for seed in (0, 1):
        mine = [c for c in calls if c[1] == seed]
        assert mine.index(("teach", seed)) < mine.index(("stu", seed)) and mine.count(("teach", seed)) == 1
    rows = study.read_results(csv_path)
    assert {(r["comparison"], r["arm"]) for r in rows} == {("own", "T"), ("c", "S"), ("c", "S2")}


def test_a_failed_need_stops_only_its_dependents(tmp_path):
    calls: list = []

    def broken(seed, ctx):
        raise RuntimeError("teachers diverged")

    owner = study.Comparison("own", "T > U", [("T", "U")], [study.Job("teach", ("T",), broken)])
    comp = study.Comparison("c", "S > V", [("S", "V")],
                            [study.Job("stu", ("S",), stub_job("stu", "S", calls, 60.0).fn, needs=("teach",)),
                             stub_job("v", "V", calls, 1.0)])
    state = study.run_all([comp], [0], lambda _: "1 ep", tmp_path / "r.csv", [owner, comp], ctx=None,
                          log=lambda _: None)
    assert calls == [("v", 0)]  # the independent run still ran
    assert state["c"].startswith("failed") and "'teach'" in state["c"]


def test_unknown_need_is_named(tmp_path):
    comp = study.Comparison("c", "S > V", [("S", "V")],
                            [study.Job("stu", ("S",), lambda s, c: {}, needs=("nobody",))])
    with pytest.raises(ValueError, match="job 'stu' needs 'nobody', which no comparison trains"):
        study.run_all([comp], [0], lambda _: "1 ep", tmp_path / "r.csv", [comp], ctx=None)


def test_every_study_job_need_is_trained_by_some_comparison():
    names = {j.name for c in study.COMPARISONS for j in c.jobs}
    assert {n for c in study.COMPARISONS for j in c.jobs for n in j.needs} <= names
    assert all(study.BY_NAME[c.ablation_of] for c in study.COMPARISONS if c.ablation_of)


def test_bad_rows_named(capsys):
    with pytest.raises(SystemExit):
        study.parse(["--rows", "dml,nope"])
    assert "--rows nope: unknown; allowed: dml" in capsys.readouterr().err


# ------------------------------------------------------------------ dry run
@pytest.mark.slow
def test_dry_run_one_comparison(tmp_path):
    assert study.main(["--out", str(tmp_path), "--dry-run", "--rows", "dml"]) == 0
    rows = study.read_results(tmp_path / "results.csv")
    assert sorted((r["arm"], r["seed"]) for r in rows) == [
        ("DML node 0", 0), ("DML node 0", 1), ("vanilla", 0), ("vanilla", 1)]
    page = (tmp_path / "results.md").read_text()
    assert "| dml | DML > vanilla | DML node 0 |" in page
    assert "**mixup**" in page and "not run" in page  # a row it did not run is listed, not invented
    assert (tmp_path / "results.png").stat().st_size > 0


@pytest.mark.slow
def test_parallel_dry_run_trains_the_teachers_before_their_students(tmp_path):
    """--jobs 2: runs in two spawned processes; the distillation students wait
    for their seed's teachers (a run of the ensembles row), results.csv is
    written by the parent alone, and the invocation's elapsed time is kept."""
    assert study.main(["--out", str(tmp_path), "--dry-run", "--rows", "distillation-prob", "--jobs", "2"]) == 0
    rows = study.read_results(tmp_path / "results.csv")
    assert sorted((r["comparison"], r["arm"], r["seed"]) for r in rows if r["seed"] == 0) == [
        ("distillation-prob", "averaged", 0), ("distillation-prob", "per-teacher sum", 0),
        ("distillation-prob", "per-teacher sum, prob only", 0), ("ensembles", "push-pull", 0)]
    assert len(rows) == 8 and len({(r["comparison"], r["arm"], r["seed"]) for r in rows}) == 8
    for seed in (0, 1):
        assert any((tmp_path / "runs" / study.TEACHERS / f"seed{seed}").glob("*.pt"))
    page = (tmp_path / "results.md").read_text()
    assert "| distillation-prob |" in page and "min)" in page
