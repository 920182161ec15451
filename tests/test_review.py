"""Review of a change (stages.review): paired verdicts, params diff, Markdown, CLI, and e2e.

Unit tests build per-user frames with a known answer; the CLI tests use a small git
repository in a temporary folder; the e2e tests run the real pipeline (marked ``e2e``).
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from recpipe.errors import DataError
from recpipe.evaluation.review import (
    BETTER,
    MISSING,
    NO_CHANGE_IDENTICAL,
    NO_CHANGE_NOISE,
    WORSE,
    ParamChange,
    compare_runs,
    diff_params,
    flatten,
    fmt_diff,
    render_params_table,
    render_review,
    summary_line,
)
from stages import review as cli
from tests.conftest import dvc, dvc_json, git, reset, review_md, sh, stages_run

ROOT = Path(__file__).resolve().parents[1]
METRICS = ["ndcg@10", "precision@10"]


def per_user(
    models: dict[str, np.ndarray], metrics: list[str] = METRICS, users: np.ndarray | None = None
) -> pd.DataFrame:
    """A per_user.parquet frame: each model's values used for every metric column."""
    parts = []
    for name, values in models.items():
        idx = np.arange(len(values)) if users is None else users
        part = pd.DataFrame({"model": name, "user_idx": idx.astype(np.int64)})
        for i, m in enumerate(metrics):
            # Different metrics get slightly different values so columns are not clones.
            part[m] = np.clip(values - 0.01 * i, 0, 1).astype(np.float32)
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


def means(df: pd.DataFrame) -> dict[str, dict[str, float]]:
    """metrics.json of a per-user frame (4 decimals, as the evaluate stage writes it)."""
    cols = [c for c in df.columns if c not in ("model", "user_idx")]
    out: dict[str, dict[str, float]] = {
        str(m): {c: round(float(g[c].astype(np.float64).mean()), 4) for c in cols}
        for m, g in df.groupby("model", sort=False)
    }
    return {**out, "candidate_recall": {"union": {"10": 0.5}}}


def base_values(n: int = 200, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0.2, 0.8, n)


def compare(base: pd.DataFrame, head: pd.DataFrame, **kw):
    return compare_runs(base, head, means(base), means(head), n_boot=500, seed=0, **kw)


def verdicts(run) -> dict[tuple[str, str], str]:
    return {(c.model, c.metric): c.verdict for c in run.comparisons}


# --------------------------------------------------------------------------- verdicts


def test_clearly_worse_model_is_flagged_and_others_identical() -> None:
    v = base_values()
    rng = np.random.default_rng(2)
    base = per_user({"als": v, "ease": v})
    head = per_user({"als": v - 0.1 + rng.normal(0, 0.02, len(v)), "ease": v})
    run = compare(base, head)
    got = verdicts(run)
    assert got[("als", "ndcg@10")] == WORSE and got[("als", "precision@10")] == WORSE
    assert got[("ease", "ndcg@10")] == NO_CHANGE_IDENTICAL
    als = next(c for c in run.comparisons if c.model == "als" and c.metric == "ndcg@10")
    assert als.high < 0 and als.low < als.diff < als.high
    assert als.diff == pytest.approx(-0.1, abs=0.01) and als.users == len(v)
    assert als.p_value < 0.01


def test_clearly_better_model_is_flagged() -> None:
    v = base_values()
    run = compare(per_user({"svd": v}), per_user({"svd": v + 0.05}))
    assert set(verdicts(run).values()) == {BETTER}


def test_identical_runs_are_no_change() -> None:
    df = per_user({"als": base_values(), "ease": base_values(seed=3)})
    run = compare(df, df.copy())
    assert set(verdicts(run).values()) == {NO_CHANGE_IDENTICAL}
    assert not run.significant
    assert all(c.diff == 0 and c.low == 0 and c.high == 0 for c in run.comparisons)
    assert summary_line(run).startswith("**No significant changes** (4 comparisons)")


def test_zero_mean_changes_are_within_noise() -> None:
    v = base_values()
    # Half the users gain 0.05 and half lose it: values moved, the mean did not.
    swing = np.where(np.arange(len(v)) % 2 == 0, 0.05, -0.05)
    run = compare(per_user({"als": v}), per_user({"als": v + swing}))
    assert set(verdicts(run).values()) == {NO_CHANGE_NOISE}


def test_lower_is_better_metrics_flip_the_direction() -> None:
    v = base_values()
    base = per_user({"svd": v}, metrics=["rmse"])
    head = per_user({"svd": v - 0.1}, metrics=["rmse"])
    assert verdicts(compare(base, head)) == {("svd", "rmse"): BETTER}


def test_models_added_and_removed_are_listed_not_compared() -> None:
    v = base_values()
    base = per_user({"als": v, "old": v})
    head = per_user({"new": v, "als": v})
    run = compare(base, head)
    assert run.added == ["new"] and run.removed == ["old"] and run.models == ["als"]
    assert {c.model for c in run.comparisons} == {"als"}
    line = summary_line(run)
    assert "models added: new" in line and "models removed: old" in line
    md = render_review(run, "", base_label="`main`", head_label="ws", params_source="p")
    assert "Models added (no base to compare): new." in md
    assert "Models removed (no head to compare): old." in md


def test_only_users_scored_by_both_runs_are_paired() -> None:
    v = base_values(100)
    base = per_user({"als": v}, users=np.arange(100))
    # head lost users 0-9 and gained 100-109; the 90 shared users are unchanged
    head_users = np.arange(10, 110)
    head_values = np.concatenate([v[10:], np.full(10, 0.0)])
    head = per_user({"als": head_values}, users=head_users)
    run = compare(base, head)
    assert run.users["als"].paired == 90
    assert set(verdicts(run).values()) == {NO_CHANGE_IDENTICAL}
    md = render_review(run, "", base_label="b", head_label="h", params_source="p")
    assert "Paired over the 90 users both runs scored (base 100, head 100)." in md


def test_metric_columns_on_one_side_are_reported_not_compared() -> None:
    v = base_values()
    run = compare(per_user({"als": v}), per_user({"als": v}, metrics=["ndcg@10", "mrr@10"]))
    assert run.metrics == ["ndcg@10"] and run.metrics_one_side == ["mrr@10", "precision@10"]


def test_non_finite_values_leave_the_pairing() -> None:
    v = base_values(50)
    head = per_user({"als": v})
    head.loc[0, "ndcg@10"] = np.nan
    run = compare(per_user({"als": v}), head)
    ndcg = next(c for c in run.comparisons if c.metric == "ndcg@10")
    assert ndcg.users == 49 and ndcg.verdict == NO_CHANGE_IDENTICAL


def test_summary_values_come_from_metrics_json_else_the_mean() -> None:
    v = base_values()
    base, head = per_user({"als": v}), per_user({"als": v})
    base_metrics = {"als": {"ndcg@10": 0.1234}}  # precision@10 missing: per-user mean
    run = compare_runs(base, head, base_metrics, {}, n_boot=100, seed=0)
    ndcg, prec = run.comparisons
    assert ndcg.base == 0.1234
    assert prec.base == pytest.approx(float(base["precision@10"].astype(np.float64).mean()))
    assert ndcg.head == pytest.approx(float(head["ndcg@10"].astype(np.float64).mean()))


def test_row_order_does_not_change_the_result() -> None:
    rng = np.random.default_rng(5)
    v = base_values()
    base = per_user({"als": v, "ease": v})
    head = per_user({"als": v + rng.normal(0, 0.05, len(v)), "ease": v})
    shuffled = head.sample(frac=1.0, random_state=3).reset_index(drop=True)
    a = compare(base, head)
    b = compare(base.iloc[::-1].reset_index(drop=True), shuffled)

    # same numbers; only the model order follows each file's order
    def key(c):
        return (c.model, c.metric)

    assert sorted(a.comparisons, key=key) == sorted(b.comparisons, key=key)


def test_per_user_validation_names_the_file_and_problem() -> None:
    good = per_user({"als": base_values(10)})
    with pytest.raises(DataError, match="base.parquet.*'user_idx'"):
        compare(good.drop(columns="user_idx"), good, base_name="base.parquet")
    with pytest.raises(DataError, match="head.parquet.*appears twice"):
        compare(good, pd.concat([good, good.iloc[:1]]), head_name="head.parquet")


# --------------------------------------------------------------------------- params


def test_flatten_and_diff_params() -> None:
    base = {"a": {"b": 1, "c": [1, 2]}, "seed": 42, "gone": {"x": None}, "flag": True}
    head = {"a": {"b": 1.0, "c": [2, 1]}, "seed": 43, "new": "x", "flag": 1}
    assert flatten(base) == {"a.b": 1, "a.c": [1, 2], "seed": 42, "gone.x": None, "flag": True}
    changes = diff_params(base, head)
    assert changes == [
        ParamChange("a.c", [1, 2], [2, 1]),
        ParamChange("flag", True, 1),  # a boolean turned number is a real change
        ParamChange("gone.x", None, MISSING),
        ParamChange("new", MISSING, "x"),
        ParamChange("seed", 42, 43),
    ]  # a.b: 1 -> 1.0 is the same setting


def test_params_table_marks_missing_and_escapes_pipes() -> None:
    table = render_params_table([ParamChange("a|b", MISSING, "x|y"), ParamChange("n", 1, None)])
    assert table.splitlines() == [
        "| param | base | head |",
        "|---|---|---|",
        "| a\\|b | — | x\\|y |",
        "| n | 1 | null |",
    ]
    assert render_params_table([]) == "No params changed."


# --------------------------------------------------------------------------- Markdown


def flagged_run():
    v = base_values()
    base = per_user({"popularity": v, "als": v, "ease": v})
    head = per_user({"popularity": v, "als": v - 0.08, "ease": v})
    return compare(base, head)


def test_markdown_shape() -> None:
    run = flagged_run()
    md = render_review(
        run,
        "| Path | Param | HEAD | workspace |\n|---|---|---|---|\n| params.yaml | x | 1 | 2 |",
        base_label="`main` (abc1234)",
        head_label="the workspace",
        params_source="Params: `dvc params diff`.",
    )
    lines = md.splitlines()
    assert lines[0] == "## Review: the workspace vs `main` (abc1234)"
    assert lines[2].startswith("**2 significant changes:** als ndcg@10 worse (-0.080 [")
    assert "### Params" in lines and "### Metrics" in lines
    assert "| params.yaml | x | 1 | 2 |" in lines
    # the model that moved is open; the identical ones are folded
    assert lines.index("#### als") < lines.index("<details>") < lines.index("#### popularity")
    assert "<summary>2 models identical to the base: popularity, ease</summary>" in lines
    header = "| metric | base | head | Δ | paired Δ [95% interval] | p | verdict |"
    assert lines.count(header) == 3
    row = next(line for line in lines if line.startswith("| ndcg@10 |") and "worse" in line)
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 7 and cells[3] == "-0.0800" and cells[6] == "**worse**"
    assert md.endswith("</sub>\n") and "seed 0" in md and "500 resamples" in md


def test_models_that_moved_within_noise_stay_open() -> None:
    v = base_values()
    swing = np.where(np.arange(len(v)) % 2 == 0, 0.05, -0.05)
    run = compare(per_user({"als": v, "ease": v}), per_user({"als": v + swing, "ease": v}))
    md = render_review(run, "", base_label="b", head_label="h", params_source="p")
    lines = md.splitlines()
    assert lines[2] == "**No significant changes** (4 comparisons)."
    assert lines.index("#### als") < lines.index("<details>") < lines.index("#### ease")
    assert "<summary>1 model identical to the base: ease</summary>" in lines
    assert "2 comparisons moved at all" in md


def test_a_bare_params_table_means_no_params_changed() -> None:
    df = per_user({"als": base_values()})
    bare = "| Path   | Param   | HEAD   | workspace   |\n|--------|---------|--------|---|"
    md = render_review(compare(df, df), bare, base_label="b", head_label="h", params_source="p")
    assert "No params changed." in md and "| Path" not in md
    assert "moved at all" not in md  # nothing moved: no multiple-comparison caveat


def test_output_is_deterministic_and_seeded() -> None:
    def render(seed: int) -> str:
        v = base_values()
        rng = np.random.default_rng(9)
        base = per_user({"als": v})
        head = per_user({"als": v + rng.normal(0.0, 0.1, len(v))})
        run = compare_runs(base, head, means(base), means(head), n_boot=300, seed=seed)
        return render_review(run, "", base_label="b", head_label="h", params_source="p")

    assert render(0) == render(0)
    assert render(0) != render(1)  # the interval depends on the resamples


def test_fmt_diff_keeps_small_changes_visible() -> None:
    assert fmt_diff(-0.0834) == "-0.083"
    assert fmt_diff(0.0) == "+0.000"
    assert fmt_diff(-0.00042) == "-0.00042"
    assert fmt_diff(0.095, signed=False) == "0.095"
    assert fmt_diff(float("nan")) == "n/a"


# --------------------------------------------------------------------------- CLI


def write_run(repo: Path, df: pd.DataFrame, params: dict) -> None:
    (repo / "reports").mkdir(exist_ok=True)
    df.to_parquet(repo / "reports/per_user.parquet", index=False)
    (repo / "reports/metrics.json").write_text(json.dumps(means(df)))
    (repo / "params.yaml").write_text(yaml.safe_dump(params))


@pytest.fixture
def git_repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository whose HEAD holds a baseline run and whose workspace a worse ALS."""
    git(tmp_path, "init", "-q")
    v = base_values()
    write_run(tmp_path, per_user({"als": v, "ease": v}), {"als": {"factors": 8}, "seed": 1})
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-qm", "base")
    write_run(tmp_path, per_user({"als": v - 0.1, "ease": v}), {"als": {"factors": 2}, "seed": 1})
    # No dvc project here: take the params.yaml fallback without starting dvc at all.
    monkeypatch.setattr(cli, "_dvc_executable", lambda: None)
    return tmp_path


def run_cli(repo: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """Exit code and stdout of the CLI (errors go to the log: see ``caplog``)."""
    code = cli.main(["--repo", str(repo), "--n-boot", "300", *args])
    return code, capsys.readouterr().out


def test_cli_reviews_workspace_against_a_revision(
    git_repo: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out = run_cli(git_repo, capsys, "--base", "HEAD")
    assert code == 0
    sha = git(git_repo, "rev-parse", "--short=7", "HEAD").strip()
    assert out.startswith(f"## Review: the workspace vs `HEAD` ({sha})\n")
    assert "als ndcg@10 worse (-0.100 [" in out
    assert "| als.factors | 8 | 2 |" in out
    assert "diff of `params.yaml`" in out
    # the same inputs give the same bytes
    assert run_cli(git_repo, capsys, "--base", "HEAD")[1] == out


def test_cli_head_can_be_a_revision(git_repo: Path, capsys: pytest.CaptureFixture[str]) -> None:
    git(git_repo, "commit", "-qam", "worse als")
    code, out = run_cli(git_repo, capsys, "--base", "HEAD~1", "--head", "HEAD")
    assert code == 0 and "## Review: `HEAD` (" in out and "als ndcg@10 worse" in out
    code, out = run_cli(git_repo, capsys, "--base", "HEAD", "--head", "HEAD")
    assert code == 0 and "**No significant changes**" in out and "No params changed." in out


def test_cli_missing_inputs_exit_1_naming_them(
    git_repo: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    code, out = run_cli(git_repo, capsys, "--base", "no-such-branch")
    assert code == 1 and out == "" and "unknown git revision 'no-such-branch'" in caplog.text
    args = ("--base", "HEAD", "--per-user", "reports/x.parquet")
    code, out = run_cli(git_repo, capsys, *args)
    assert code == 1 and "reports/x.parquet not found in the workspace" in caplog.text
    shutil.copy(git_repo / "reports/per_user.parquet", git_repo / "reports/x.parquet")
    code, out = run_cli(git_repo, capsys, *args)
    assert code == 1 and out == "" and "reports/x.parquet is not in revision 'HEAD'" in caplog.text


def test_cli_base_dir_reads_the_base_run_from_a_checkout(
    git_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The base's numbers from a checkout where its pipeline ran on this machine (CI), not
    from the commit: here that checkout's run differs from what was committed."""
    base_dir = tmp_path / "base"
    git(git_repo, "worktree", "add", "-q", "--detach", str(base_dir), "HEAD")
    v = base_values()
    write_run(base_dir, per_user({"als": v - 0.1, "ease": v}), {"als": {"factors": 8}, "seed": 1})
    code, out = run_cli(git_repo, capsys, "--base", "HEAD", "--base-dir", str(base_dir))
    assert code == 0
    sha = git(git_repo, "rev-parse", "--short=7", "HEAD").strip()
    assert out.startswith(f"## Review: the workspace vs `HEAD` ({sha}) rerun here\n"), out
    # the checkout's ALS equals the workspace's; params still come from the revision
    assert "**No significant changes**" in out and "| als.factors | 8 | 2 |" in out
    code, out = run_cli(git_repo, capsys, "--base", "HEAD")
    assert "als ndcg@10 worse" in out  # against the committed numbers instead


def test_cli_base_dir_must_hold_the_base_revision_and_its_run(
    git_repo: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog
) -> None:
    git(git_repo, "commit", "-qam", "worse als")
    base_dir = tmp_path / "base"
    git(git_repo, "worktree", "add", "-q", "--detach", str(base_dir), "HEAD~1")
    head = git(git_repo, "rev-parse", "--short=7", "HEAD").strip()
    code, out = run_cli(git_repo, capsys, "--base", "HEAD", "--base-dir", str(base_dir))
    assert code == 1 and out == ""
    assert f"--base-dir {base_dir} has " in caplog.text and f"not HEAD ({head})" in caplog.text
    (base_dir / "reports/metrics.json").unlink()
    code, out = run_cli(git_repo, capsys, "--base", "HEAD~1", "--base-dir", str(base_dir))
    assert code == 1 and out == ""
    assert f"reports/metrics.json not found in --base-dir {base_dir}: run the pipeline there" in (
        caplog.text
    )


def workflow_steps() -> list[dict]:
    doc = yaml.safe_load((ROOT / ".github/workflows/review.yml").read_text())
    return doc["jobs"]["review"]["steps"]


def test_the_workflow_computes_both_sides_on_the_runner() -> None:
    """Regression: the base side came from the reports committed on the base branch (the
    committer's machine) and the head side from the runner, so a review could compare two
    CPUs' floats. Both sides are now run on the runner, the base in a worktree sharing the
    DVC cache, and the review reads the base from that worktree."""
    steps = workflow_steps()
    runs = [step.get("run", "") for step in steps]
    base = next(i for i, r in enumerate(runs) if "git worktree add" in r)
    head = next(i for i, r in enumerate(runs) if i != base and "make repro" in r)
    review = next(i for i, r in enumerate(runs) if "stages.review" in r)
    assert base < head < review  # the base fills the run cache the head then uses
    worktree = runs[base].split("git worktree add")[1].split()
    assert worktree[:3] == ["--detach", '"$RUNNER_TEMP/base"', '"origin/$BASE_REF"'], worktree
    assert 'cache.dir "$GITHUB_WORKSPACE/.dvc/cache"' in runs[base]
    for i in (base, head):
        lines = [line.strip() for line in runs[i].splitlines()]
        assert "make repro" in lines, runs[i]
        # evaluate is re-run: `dvc repro` would keep the committed reports when its inputs
        # match dvc.lock
        assert lines[-1].endswith("dvc repro --force --single-item evaluate"), runs[i]
    command = " ".join(runs[review].split("\\\n"))
    assert '--base "origin/$BASE_REF"' in command and '--base-dir "$RUNNER_TEMP/base"' in command
    assert steps[base]["env"]["BASE_REF"] == "${{ github.base_ref }}"
    assert steps[base].get("continue-on-error") is True  # the review then says what failed


# --------------------------------------------------------------------------- end to end


SWEEP = {
    "sweep-worse-als": ("candidates.als.factors=2", "candidates.als.iterations=1"),
    "sweep-fewer-popular": ("serve.popular_n=50",),
}
"""Queued experiments: name -> overrides on top of the tiny preset.

The first is a deliberately worse ALS than the tiny preset's 8 factors x 5 iterations: on
tiny data factors=2 alone is flagged too, but with a narrower margin (ndcg@10 -0.038
[-0.064, -0.015] against -0.049 [-0.078, -0.024]); the margin keeps the test stable across
BLAS builds. It must re-run ALS and what reads its candidates, and nothing else. The second
changes a serving setting, which must re-run the bundle and nothing else (the cheapest
second experiment; tests/test_e2e.py checks a split change's re-runs, and
tests/test_dvc_wiring.py that each stage declares exactly the params it reads, which is
what DVC's re-runs follow). One sweep serves both tests below, so the pipeline runs each
experiment once."""


@pytest.fixture(scope="module")
def swept(tiny_repo: Path) -> tuple[Path, dict[str, list[str]], dict]:
    """The tiny baseline after queueing SWEEP and running the queue in the foreground (the
    queue `dvc queue start` hands to workers): the repository, the stages each experiment
    ran, and `dvc exp show --json`. The workspace stays at the baseline."""
    for name, overrides in SWEEP.items():
        sets = [arg for o in overrides for arg in ("-S", o)]
        dvc(tiny_repo, "exp", "run", "--queue", "--name", name, "-S", "+experiment=tiny", *sets)
    log = dvc(tiny_repo, "exp", "run", "--run-all")
    ran = {
        part.split("'")[1]: stages_run(part) for part in log.split("Reproducing experiment ")[1:]
    }
    return tiny_repo, ran, json.loads(dvc(tiny_repo, "exp", "show", "--json"))


def metrics_of_rev(repo: Path, rev: str) -> dict:
    return json.loads(git(repo, "show", f"{rev}:reports/metrics.json"))


@pytest.mark.e2e
def test_e2e_worse_als_is_flagged(swept: tuple, tmp_path: Path) -> None:
    """A worse ALS re-runs only ALS and what is downstream of it, and review flags it."""
    baseline, ran, _ = swept
    head = git(baseline, "rev-parse", "HEAD").strip()
    try:
        dvc(baseline, "exp", "apply", "sweep-worse-als")
        out = review_md(baseline)
        # the same change as two commits, compared the way a pull request is reviewed
        git(baseline, "commit", "-qam", "worse ALS")
        metrics_diff = dvc_json(baseline, "metrics", "diff", "HEAD~1", "HEAD")
        dvc(baseline, "plots", "diff", "HEAD~1", "HEAD", "-o", str(tmp_path / "plots"))
        # as CI reads it: the base's run from a worktree of the base revision. (CI first
        # re-runs the pipeline there, from DVC's run cache, and evaluate forced, so that
        # both sides are the runner's numbers. Not here, for time: that every stage re-run
        # from scratch writes the committed bytes is test_e2e.py's identical-rerun test, and
        # the workflow's commands are checked above.)
        base_dir = tmp_path / "base"
        git(baseline, "worktree", "add", "-q", "--detach", str(base_dir), "HEAD~1")
        ci_out = sh(
            baseline, sys.executable, "-m", "stages.review", "--base", "HEAD~1",
            "--base-dir", str(base_dir),
        )  # fmt: skip
    finally:
        if (tmp_path / "base").exists():
            git(baseline, "worktree", "remove", "--force", str(tmp_path / "base"))
        git(baseline, "reset", "-q", "--hard", head)  # the baseline, whatever failed above
        reset(baseline)
    # the one changed model re-ran, then what reads its candidates; nothing upstream or beside
    assert ran["sweep-worse-als"] == [
        "check",
        "candidates@als",
        "blend",
        "rank",
        "evaluate",
        "bundle",
    ], ran
    changed = metrics_diff["reports/metrics.json"]
    assert changed["als.ndcg@10"]["new"] < changed["als.ndcg@10"]["old"], changed
    assert "ease.ndcg@10" not in changed  # EASE does not depend on ALS
    assert (tmp_path / "plots" / "index.html").stat().st_size > 0
    summary = out.splitlines()[2]
    assert "significant change" in summary and "als ndcg@10 worse" in summary, out
    # dvc pads its table's cells: compare the cells, not the spacing
    rows = {tuple(c.strip() for c in line.strip("|").split("|")) for line in out.splitlines()}
    assert ("params.yaml", "candidates.als.factors", "8", "2") in rows, out
    assert ("params.yaml", "candidates.als.iterations", "5", "1") in rows, out
    # models the change cannot reach are untouched and folded away
    assert "identical to the base: popularity, itemknn, svd, tfidf, ease, seqknn" in out, out
    # the same numbers as against the committed base
    assert ci_out.splitlines()[2] == summary, ci_out
    assert ci_out.split("### Metrics")[1] == out.split("### Metrics")[1], ci_out


@pytest.mark.e2e
def test_e2e_queued_sweep_runs_both_experiments(swept: tuple) -> None:
    baseline, ran, shown = swept
    assert ran["sweep-fewer-popular"] == ["check", "bundle"], ran
    found = {}
    for rev in shown:
        for exp in rev.get("experiments") or []:
            if exp.get("name") in SWEEP:
                data = exp["revs"][0]["data"]
                params = data["params"]["params.yaml"]["data"]
                metrics = data["metrics"]["reports/metrics.json"]["data"]
                found[exp["name"]] = (
                    params["candidates"]["als"]["factors"],
                    params["serve"]["popular_n"],
                    metrics["als"]["ndcg@10"],
                    metrics["ranker"]["ndcg@10"],
                )
    assert set(found) == set(SWEEP), shown
    worse, fewer = found["sweep-worse-als"], found["sweep-fewer-popular"]
    base_params = yaml.safe_load(git(baseline, "show", "HEAD:params.yaml"))
    base = metrics_of_rev(baseline, "HEAD")
    # each experiment carries its own params (none leaks into the other) and its metrics
    assert worse[:2] == (2, base_params["serve"]["popular_n"]), found
    assert fewer[:2] == (base_params["candidates"]["als"]["factors"], 50), found
    assert worse[2] < base["als"]["ndcg@10"], found  # a worse ALS scores lower
    # a serving setting changes no evaluated list
    assert fewer[2:] == (base["als"]["ndcg@10"], base["ranker"]["ndcg@10"]), found
