"""The evaluate stage and its pure core, on a tiny fold built here with real fitted models."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from recpipe.artifacts import load_model, save_model
from recpipe.config import parse
from recpipe.errors import ConfigError, DataError
from recpipe.evaluation import metrics
from recpipe.evaluation.embedding import embedding_map
from recpipe.evaluation.scoring import (
    EvalConfig,
    candidate_ranks,
    candidate_recall,
    json_ready,
    popularity_buckets,
    relevant_pairs,
)
from recpipe.features.metadata import item_category_matrix
from recpipe.models.base import TrainData, concat_recs
from recpipe.models.registry import model_class
from recpipe.stage import stage_parser
from stages import evaluate

N_USERS, N_ITEMS = 40, 30
COLD_ITEM = N_ITEMS - 1  # in the catalogue, no history event
NEW_USER = N_USERS - 1  # no history, one relevant target
KS = [1, 3, 5]
HEADLINE = ["ndcg@5", "precision@5", "recall@5", "map@5", "mrr@5", "hitrate@5"]
EVAL = {
    "ks": KS,
    "headline": HEADLINE,
    "beyond_k": 5,
    "curve_ks": [1, 2, 3, 5],
    "n_boot": 200,
    "cold_user_max_events": 2,
    "recall_ns": [2, 5, 10],
    "embedding_clusters": 3,
}
CANDIDATES = ("als", "ease", "popularity", "svd")  # ease is disabled (empty file)


def tiny_fold(seed: int = 0) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Two taste blocks (items 0-14 'outdoor', 15-28 'urban'); item 29 is new.

    User ``u`` (< 39) has ``1 + u % 8`` history events in its own block (rated 5) and one in the
    other (rated 1): cold users have up to 2 events, heavy ones 9. Its targets: one unseen
    own-block item (relevant, rated for even users), one other-block item (not relevant), and
    for every fourth user the new item 29 (relevant). User 39 has no history and one target.
    """
    rng = np.random.default_rng(seed)
    hist, targets = [], []
    t = 0
    for u in range(N_USERS - 1):
        own = np.arange(0, 15) if u < 20 else np.arange(15, 29)
        other = np.arange(15, 29) if u < 20 else np.arange(0, 15)
        picks = rng.choice(own, 1 + u % 8 + 1, replace=False)
        seen, target = picks[:-1], int(picks[-1])
        for i in seen:
            t += 1
            hist.append((u, int(i), 5.0, t))
        t += 1
        hist.append((u, int(rng.choice(other)), 1.0, t))
        targets.append((u, target, 5.0 if u % 2 == 0 else np.nan, True))
        targets.append((u, int(rng.choice(other)), np.nan, False))
        if u % 4 == 0:
            targets.append((u, COLD_ITEM, np.nan, True))
    targets.append((NEW_USER, 3, np.nan, True))
    history = pd.DataFrame(hist, columns=["user_idx", "item_idx", "rating", "timestamp"])
    history = history.assign(event="rating", weight=1.0)
    tg = pd.DataFrame(targets, columns=["user_idx", "item_idx", "rating", "relevant"])
    tg = tg.assign(timestamp=10**6, weight=1.0)
    for df in (history, tg):
        df["user_id"] = "u" + df["user_idx"].astype(str)
        df["item_id"] = "i" + df["item_idx"].astype(str)
    items = pd.DataFrame(
        {
            "item_id": [f"i{i}" for i in range(N_ITEMS)],
            "item_idx": np.arange(N_ITEMS, dtype=np.int32),
            "title": [f"item {i}" for i in range(N_ITEMS)],
            "text": ["river forest" if i < 15 else "steel city" for i in range(N_ITEMS)],
            "categories": [["outdoor"] if i < 15 else ["urban"] for i in range(N_ITEMS)],
        }
    )
    items.loc[COLD_ITEM, "categories"] = ["outdoor", "new"]
    users = pd.DataFrame(
        {"user_id": [f"u{u}" for u in range(N_USERS)], "user_idx": np.arange(N_USERS)}
    )
    return history, tg, items, users


def fixed_list(users: np.ndarray, items: list[int]) -> pd.DataFrame:
    """The same ranked list for every user (a stand-in for the blend)."""
    n = len(items)
    return pd.DataFrame(
        {
            "user_idx": np.repeat(users, n).astype(np.int64),
            "item_idx": np.tile(items, len(users)).astype(np.int64),
            "score": np.tile(np.linspace(1, 0, n), len(users)).astype(np.float32),
            "rank": np.tile(np.arange(1, n + 1), len(users)).astype(np.int32),
        }
    )


def blend_stand_in(users: np.ndarray, history: pd.DataFrame) -> pd.DataFrame:
    """Per user: the first unseen of a fixed order, then the cold item, then four more unseen
    (a list like the blend's: never an item of the user's history)."""
    seen = set(zip(history["user_idx"], history["item_idx"], strict=True))
    order = [3, 20, 1, 16, 7, 2, 22, 4, 18, 5, 25]
    parts = []
    for u in users:
        fresh = [i for i in order if (u, i) not in seen]
        parts.append(fixed_list(np.array([u]), [fresh[0], COLD_ITEM, *fresh[1:5]]))
    return pd.concat(parts, ignore_index=True)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the stage's inputs: split, prepared, candidates, blend, models, params."""
    root = tmp_path_factory.mktemp("eval")
    history, targets, items, users = tiny_fold()
    (root / "split").mkdir()
    (root / "prepared").mkdir()
    # load_fold joins train and valid: put the last events in valid to exercise that.
    history.iloc[:-20].to_parquet(root / "split/train.parquet", index=False)
    history.iloc[-20:].to_parquet(root / "split/valid.parquet", index=False)
    targets.to_parquet(root / "split/test_targets.parquet", index=False)
    items.to_parquet(root / "prepared/items.parquet", index=False)
    users.to_parquet(root / "prepared/users.parquet", index=False)

    data = TrainData(history, items, users)
    target_users = np.unique(targets["user_idx"].to_numpy())
    settings = {
        "als": {"factors": 4, "iterations": 5},
        "svd": {"factors": 4, "epochs": 10},
        "popularity": {},
    }
    cand = root / "candidates/test"
    cand.mkdir(parents=True)
    for name, extra in settings.items():
        cls = model_class(name)
        model = cls(cls.config_class(**extra), seed=1).fit(data)
        model.recommend(target_users, 10).to_parquet(cand / f"{name}.parquet", index=False)
        save_model(model, root / f"models/{name}/test")
    concat_recs([]).to_parquet(cand / "ease.parquet", index=False)
    (root / "models/ease/test").mkdir(parents=True)
    (root / "models/ease/test/meta.json").write_text('{"enabled": false}')
    (root / "blend").mkdir()
    blend_stand_in(target_users, history).to_parquet(root / "blend/test_recs.parquet", index=False)
    (root / "importance.json").write_text(json.dumps({"m_als_rank": 3.5, "u_events": 1.25}))
    (root / "params.yaml").write_text(yaml.safe_dump({"seed": 7, "eval": EVAL}))
    return root


def evaluate_args(argv: list[str]):
    ap = stage_parser(evaluate.__doc__)
    evaluate.configure(ap)
    return ap.parse_args(argv)


def argv(root: Path, out: Path, **replace: str) -> list[str]:
    recs = {m: root / f"candidates/test/{m}.parquet" for m in CANDIDATES}
    recs["blend"] = root / "blend/test_recs.parquet"
    recs.update({k: Path(v) for k, v in replace.items()})
    args = ["--split", str(root / "split"), "--prepared", str(root / "prepared")]
    for name, path in recs.items():
        args += ["--recs", f"{name}={path}"]
    args += [
        "--candidates-dir", str(root / "candidates/test"),
        "--rating-model", f"svd={root / 'models/svd/test'}",
        "--rating-model", f"ease={root / 'models/ease/test'}",
        "--embedding-model", str(root / "models/als/test"),
        "--importance", str(root / "importance.json"),
        "--metrics", str(out / "metrics.json"),
        "--segments", str(out / "segments.json"),
        "--intervals", str(out / "intervals.json"),
        "--per-user", str(out / "per_user.parquet"),
        "--plots", str(out / "plots"),
        "--report", str(out / "report.md"),
        "--params", str(root / "params.yaml"),
    ]  # fmt: skip
    return args


@pytest.fixture(scope="module")
def out(project: Path) -> Path:
    out = project / "out"
    assert evaluate.main(argv(project, out)) == 0
    return out


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def test_metrics_equal_the_metrics_module(project: Path, out: Path) -> None:
    result = read_json(out / "metrics.json")
    targets = pd.read_parquet(project / "split/test_targets.parquet")
    history = pd.concat(
        [pd.read_parquet(project / f"split/{p}.parquet") for p in ("train", "valid")]
    )
    item_users = history.drop_duplicates(["user_idx", "item_idx"])["item_idx"].value_counts()
    cats, _ = item_category_matrix(pd.read_parquet(project / "prepared/items.parquet"))
    n_users = history["user_idx"].nunique()
    paths = {
        "als": "candidates/test/als.parquet",
        "svd": "candidates/test/svd.parquet",
        "popularity": "candidates/test/popularity.parquet",
        "blend": "blend/test_recs.parquet",
    }
    for name, rel in paths.items():
        recs = pd.read_parquet(project / rel)
        expected = metrics.topn_metrics(recs, targets, KS)
        expected["coverage@5"] = metrics.coverage(recs, N_ITEMS, 5)
        expected["diversity@5"] = metrics.intra_list_diversity(recs, cats, 5)
        expected["novelty@5"] = metrics.novelty(recs, item_users, n_users, 5)
        expected["arp@5"] = metrics.average_popularity(recs, item_users, 5)
        got = result[name]
        for key, value in expected.items():
            assert got[key] == round(value, 4), (name, key)
        assert got["users"] == N_USERS  # every user has a relevant target
        keys = {metrics.metric_name(m, k) for m in metrics.TOPN_METRICS for k in KS}
        assert keys <= set(got)


def test_disabled_model_is_skipped(out: Path) -> None:
    for name in ("metrics.json", "intervals.json"):
        assert "ease" not in read_json(out / name)
    for seg in read_json(out / "segments.json").values():
        assert "ease" not in seg
    per_user = pd.read_parquet(out / "per_user.parquet")
    assert "ease" not in set(per_user["model"])
    assert "ease@10" not in read_json(out / "metrics.json")["candidate_recall"]
    assert "Skipped (disabled, empty lists): ease." in (out / "report.md").read_text()
    # its column stays in the plot tables (empty), so dvc.yaml's plot fields always exist
    ndcg = pd.read_csv(out / "plots/ndcg_vs_k.csv")
    assert ndcg["ease"].isna().all() and ndcg["als"].notna().all()


def test_cold_items_segment_counts_only_cold_targets(project: Path, out: Path) -> None:
    segments = read_json(out / "segments.json")
    targets = pd.read_parquet(project / "split/test_targets.parquet")
    cold = targets[targets["relevant"] & (targets["item_idx"] == COLD_ITEM)]
    blend = pd.read_parquet(project / "blend/test_recs.parquet")
    expected = metrics.topn_metrics(blend, cold, KS)
    got = segments["cold_items"]["blend"]
    assert got["users"] == cold["user_idx"].nunique() == 10
    # the blend ranks the cold item 2nd for everyone: every cold-item user is hit at rank 2
    assert got["recall@1"] == 0.0 and got["recall@3"] == 1.0 and got["mrr@5"] == 0.5
    for key, value in expected.items():
        assert got[key] == round(value, 4)
    # models that learn from history alone never recommend the new item
    assert segments["cold_items"]["als"]["hitrate@5"] == 0.0


def test_user_segments(out: Path) -> None:
    segments = read_json(out / "segments.json")
    # cold: at most 2 history events -> users with 1 + u % 8 + 1 <= 2 (u % 8 == 0), plus user 39
    cold_users = [u for u in range(N_USERS - 1) if u % 8 == 0] + [NEW_USER]
    assert segments["cold_users"]["als"]["users"] == len(cold_users)
    assert segments["all"]["als"]["users"] == N_USERS
    assert 0 < segments["heavy_users"]["als"]["users"] < N_USERS
    assert segments["all"]["als"]["ndcg@5"] == read_json(out / "metrics.json")["als"]["ndcg@5"]


def test_intervals_contain_the_mean(out: Path) -> None:
    intervals = read_json(out / "intervals.json")
    assert set(intervals) == {"als", "svd", "popularity", "blend"}
    for per_metric in intervals.values():
        assert list(per_metric) == sorted(HEADLINE)
        for iv in per_metric.values():
            assert iv["low"] <= iv["mean"] <= iv["high"]


def test_per_user_table(out: Path) -> None:
    per_user = pd.read_parquet(out / "per_user.parquet")
    assert list(per_user.columns) == ["model", "user_idx", *HEADLINE]
    assert len(per_user) == 4 * N_USERS
    assert all(per_user[c].dtype == np.float32 for c in HEADLINE)
    means = per_user.groupby("model")["ndcg@5"].mean()
    assert means["als"] == pytest.approx(read_json(out / "metrics.json")["als"]["ndcg@5"], abs=1e-4)


def test_candidate_recall_union(project: Path, out: Path) -> None:
    recall = read_json(out / "metrics.json")["candidate_recall"]
    targets = pd.read_parquet(project / "split/test_targets.parquet")
    rel = targets.loc[targets["relevant"], ["user_idx", "item_idx"]].drop_duplicates()
    lists = {m: pd.read_parquet(project / f"candidates/test/{m}.parquet") for m in CANDIDATES}
    assert recall["relevant_pairs"] == len(rel)
    for n in EVAL["recall_ns"]:
        found = set()
        for name, recs in lists.items():
            if not len(recs):
                continue
            top = recs[recs["rank"] <= n]
            pairs = set(zip(top["user_idx"], top["item_idx"], strict=True))
            hits = {p for p in zip(rel["user_idx"], rel["item_idx"], strict=True) if p in pairs}
            assert recall[f"{name}@{n}"] == round(len(hits) / len(rel), 4)
            found |= hits
        assert recall[f"union@{n}"] == round(len(found) / len(rel), 4)
    table = pd.read_csv(out / "plots/candidate_recall.csv")
    assert list(table.columns) == ["n", "union", *sorted(CANDIDATES)]


def test_rating_metrics_for_svd(project: Path, out: Path) -> None:
    svd = read_json(out / "metrics.json")["svd"]
    targets = pd.read_parquet(project / "split/test_targets.parquet")
    rated = targets[targets["rating"].notna()]
    model = load_model(project / "models/svd/test")
    pred = model.predict_ratings(rated["user_idx"].to_numpy(), rated["item_idx"].to_numpy())
    expected = metrics.rating_errors(pred, rated["rating"].to_numpy())
    assert svd["rated_pairs"] == len(rated) == 20
    assert svd["unpredicted"] == expected["n_missing"]
    assert svd["rmse"] == round(expected["rmse"], 4)
    assert svd["mae"] == round(expected["mae"], 4)
    assert "RMSE" in (out / "report.md").read_text()


def test_plots_and_report(out: Path) -> None:
    plots = out / "plots"
    for name in ("metric_vs_k.png", "embedding_map.png", "importance.png", "popularity.png"):
        assert (plots / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert b"Software" not in (plots / name).read_bytes()
    curves = pd.read_csv(plots / "metric_vs_k.csv")
    assert list(curves.columns[:2]) == ["model", "k"]
    assert sorted(set(curves["k"])) == [1, 2, 3, 5]
    importance = pd.read_csv(plots / "importance.csv")
    assert importance["feature"].tolist() == ["m_als_rank", "u_events"]
    popularity = pd.read_csv(plots / "popularity.csv")
    assert popularity["catalogue"].sum() == pytest.approx(1.0)
    assert popularity["popularity"].sum() == pytest.approx(1.0)
    report = (out / "report.md").read_text()
    assert "## Metrics" in report and "**ndcg@K**" in report
    # exactly one bold cell per headline column unless tied
    assert report.count("**") >= 2 * len(HEADLINE)


def test_rerun_is_byte_identical(project: Path, out: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    assert evaluate.main(argv(project, again)) == 0
    files = [
        "metrics.json",
        "segments.json",
        "intervals.json",
        "report.md",
        "per_user.parquet",
        "plots/metric_vs_k.png",
        "plots/embedding_map.png",
        "plots/importance.png",
        "plots/popularity.png",
        "plots/metric_vs_k.csv",
    ]
    for name in files:
        assert (out / name).read_bytes() == (again / name).read_bytes(), name


def test_bad_input_names_file_and_column_and_keeps_outputs(project: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    assert evaluate.main(argv(project, dest)) == 0
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    bad = tmp_path / "bad.parquet"
    pd.read_parquet(project / "blend/test_recs.parquet").drop(columns="rank").to_parquet(bad)
    args = evaluate_args(argv(project, dest, blend=str(bad)))
    cfg = parse(EVAL, EvalConfig, "eval")
    with pytest.raises(DataError, match=r"bad\.parquet.*'rank'") as info:
        evaluate.run(args, cfg, seed=7)
    assert info.value.column == "rank"
    assert evaluate.main(argv(project, dest, blend=str(bad))) == 2
    after = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    assert after == before


def test_bad_ranks_name_the_file(project: Path, tmp_path: Path) -> None:
    bad = tmp_path / "gaps.parquet"
    recs = pd.read_parquet(project / "blend/test_recs.parquet")
    recs.assign(rank=recs["rank"] * 2).to_parquet(bad)
    args = evaluate_args(argv(project, tmp_path / "o", blend=str(bad)))
    with pytest.raises(DataError, match=r"gaps\.parquet.*gaps") as info:
        evaluate.run(args, parse(EVAL, EvalConfig, "eval"), seed=7)
    assert info.value.column == "rank"


def test_a_list_with_a_seen_item_is_an_error_naming_the_row(project: Path, tmp_path: Path) -> None:
    recs = pd.read_parquet(project / "blend/test_recs.parquet")
    history = pd.read_parquet(project / "split/train.parquet")
    u, i = int(history["user_idx"].iloc[0]), int(history["item_idx"].iloc[0])
    row = int(np.flatnonzero(recs["user_idx"].to_numpy() == u)[3])
    recs.loc[row, "item_idx"] = i  # the user's own history item, at rank 4
    bad = tmp_path / "leaky.parquet"
    recs.to_parquet(bad)
    args = evaluate_args(argv(project, tmp_path / "o", blend=str(bad)))
    with pytest.raises(DataError, match=r"leaky\.parquet.*'item_idx'.*already has") as info:
        evaluate.run(args, parse(EVAL, EvalConfig, "eval"), seed=7)
    assert info.value.row == row + 1
    assert f"user_idx {u}, item_idx {i}" in str(info.value)


# --------------------------------------------------------------------------- pure parts


def test_config_rejects_bad_headline_and_unknown_keys() -> None:
    with pytest.raises(ConfigError, match="cut-off 10 is not in ks"):
        parse({"ks": [5], "headline": ["ndcg@10"]}, EvalConfig, "eval")
    with pytest.raises(ConfigError, match="not a top-N metric"):
        parse({"headline": ["coverage@10"]}, EvalConfig, "eval")
    with pytest.raises(ConfigError, match="eval.n_bot: unknown key"):
        parse({"n_bot": 10}, EvalConfig, "eval")
    assert EvalConfig().all_ks == [1, 2, 3, 5, 10, 15, 20]


def test_default_config_file_is_valid() -> None:
    conf = Path(__file__).resolve().parents[1] / "conf/eval/default.yaml"
    cfg = parse(yaml.safe_load(conf.read_text()), EvalConfig, "eval")
    assert cfg == EvalConfig()


def test_candidate_recall_known_answer() -> None:
    truth = relevant_pairs(
        pd.DataFrame({"user_idx": [0, 0, 1], "item_idx": [1, 2, 3], "relevant": True})
    )
    a = pd.DataFrame({"user_idx": [0, 0, 1], "item_idx": [1, 9, 3], "rank": [1, 2, 5]})
    b = pd.DataFrame({"user_idx": [0, 1], "item_idx": [2, 3], "rank": [3, 1]})
    ranks = {m: candidate_ranks(r, truth, 10, 100) for m, r in {"a": a, "b": b}.items()}
    np.testing.assert_array_equal(ranks["a"], [1, np.inf, 5])
    out = candidate_recall(ranks, len(truth), [1, 3])
    assert out["a@1"] == pytest.approx(1 / 3) and out["b@1"] == pytest.approx(1 / 3)
    assert out["union@1"] == pytest.approx(2 / 3) and out["union@3"] == 1.0


def test_popularity_buckets_are_equal_sized_and_ordered() -> None:
    counts = np.array([5, 0, 9, 9, 1, 3, 0, 2, 7, 4])
    bucket = popularity_buckets(counts, 5)
    assert np.bincount(bucket)[1:].tolist() == [2] * 5
    assert bucket[2] == bucket[3] == 1  # the two most popular (ties by index)
    assert bucket[1] == bucket[6] == 5


def test_json_ready_rounds_and_nulls() -> None:
    got = json_ready({"a": float("nan"), "b": np.float32(0.123456), "c": np.int64(3), "d": -0.0})
    assert got == {"a": None, "b": 0.1235, "c": 3, "d": 0.0}
    assert not math.copysign(1, got["d"]) < 0


def test_embedding_map_clusters_by_taste() -> None:
    rng = np.random.default_rng(0)
    factors = np.vstack([rng.normal([5, 0, 0], 0.3, (20, 3)), rng.normal([0, 5, 0], 0.3, (20, 3))])
    items = pd.DataFrame({"item_idx": np.arange(40), "categories": [["a"]] * 20 + [["b"]] * 20})
    cats, names = item_category_matrix(items)
    known = np.ones(40, bool)
    known[0] = False  # an item without factors is left off the map
    emap = embedding_map(factors, known, cats, names, 2, seed=3)
    assert emap is not None and len(emap.items) == 39
    assert {emap.labels[0].split(": ")[1][:1], emap.labels[1].split(": ")[1][:1]} == {"a", "b"}
    assert len(set(emap.cluster[:19])) == 1 and len(set(emap.cluster[19:])) == 1


def test_embedding_map_needs_two_factors() -> None:
    """Regression: with `candidates.als.factors=1` the 2-D projection crashed the stage."""
    items = pd.DataFrame({"item_idx": np.arange(5), "categories": [["a"]] * 5})
    cats, names = item_category_matrix(items)
    factors = np.arange(1, 6, dtype=float)[:, None]
    assert embedding_map(factors, np.ones(5, bool), cats, names, 2, seed=0) is None


def test_plots_not_produced_by_a_run_are_removed(project: Path, tmp_path: Path) -> None:
    dest = tmp_path / "out"
    assert evaluate.main(argv(project, dest)) == 0
    (dest / "plots/notes.txt").write_text("kept")
    args = argv(project, dest)
    i = args.index("--importance")
    del args[i : i + 2]
    assert evaluate.main(args) == 0
    assert not (dest / "plots/importance.png").exists()
    assert not (dest / "plots/importance.csv").exists()
    assert (dest / "plots/embedding_map.png").exists()
    assert (dest / "plots/notes.txt").read_text() == "kept"


def test_list_names_are_checked() -> None:
    with pytest.raises(ConfigError, match="reserved"):
        evaluate.named_paths(["candidate_recall=x.parquet"], "--recs")
    with pytest.raises(ConfigError, match="given twice"):
        evaluate.named_paths(["a=x.parquet", "a=y.parquet"], "--recs")
    with pytest.raises(ConfigError, match="NAME=PATH"):
        evaluate.named_paths(["x.parquet"], "--recs")
