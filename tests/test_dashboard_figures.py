"""The dashboard's pure parts: frame shaping (recpipe.dashboard.tables) and Plotly figures
(recpipe.dashboard.figures), on small known inputs, without Streamlit."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
import scipy.sparse as sp

from recpipe.dashboard import figures, tables
from recpipe.evaluation.embedding import embedding_map

METRICS = {
    "ranker": {"ndcg@10": 0.30, "recall@10": 0.50, "coverage@10": 0.4, "users": 10},
    "als": {"ndcg@10": 0.20, "recall@10": 0.50, "coverage@10": 0.6, "users": 10},
    "candidate_recall": {"als@10": 0.5},
    "blend": {"ndcg@10": 0.25, "recall@10": 0.40, "coverage@10": 0.5, "users": 10},
    "svd": {"ndcg@10": 0.1, "rmse": 0.9, "mae": 0.7, "rated_pairs": 5, "unpredicted": 1},
    "rating": {"rmse": 0.8, "mae": 0.6, "rated_pairs": 5, "unpredicted": 0},
}
INTERVALS = {"ranker": {"ndcg@10": {"low": 0.2512, "high": 0.3533, "mean": 0.3}}}


def test_headline_table_orders_models_and_keeps_intervals() -> None:
    table = tables.headline_table(METRICS, INTERVALS, ["ndcg@10", "recall@10"])
    # candidate_recall is no model; the rating predictor has no list
    assert list(table.index) == ["als", "svd", "blend", "ranker"]
    assert table.loc["ranker", "ndcg@10"] == 0.30
    assert table.loc["ranker", "ndcg@10 CI"] == "[0.251, 0.353]"
    assert table.loc["als", "ndcg@10 CI"] == ""
    assert np.isnan(table.loc["svd", "recall@10"])


def test_best_models_marks_ties_and_lower_is_better() -> None:
    table = tables.headline_table(METRICS, INTERVALS, ["ndcg@10", "recall@10"])
    best = tables.best_models(table, ["ndcg@10", "recall@10"])
    assert best == {"ndcg@10": ["ranker"], "recall@10": ["als", "ranker"]}
    frame = pd.DataFrame({"rmse": [0.9, 0.8], "mae": [0.5, np.nan]}, index=["a", "b"])
    assert tables.best_models(frame, ["rmse", "mae"]) == {"rmse": ["b"], "mae": ["a"]}


def test_beyond_and_rating_tables() -> None:
    beyond = tables.beyond_table(METRICS)
    assert list(beyond.columns) == ["coverage@10"] and "svd" not in beyond.index
    rating = tables.rating_table(METRICS)
    assert list(rating.index) == ["svd", "rating"] and rating.loc["svd", "rmse"] == 0.9
    assert tables.rating_table({"als": {"ndcg@10": 0.1}}).empty


def test_verdict_marks() -> None:
    verdicts = pd.DataFrame(
        {
            "model": ["als", "als", "ranker"],
            "metric": ["ndcg@10", "recall@10", "ndcg@10"],
            "paired Δ": [-0.05, 0.0, 0.001],
            "verdict": ["worse", "no change (identical)", "no change (within noise)"],
        }
    )
    marks = tables.verdict_marks(verdicts)
    assert marks.loc["als", "ndcg@10 vs base"] == "▼ worse -0.0500"
    assert marks.loc["als", "recall@10 vs base"] == "="
    assert marks.loc["ranker", "ndcg@10 vs base"] == "~ noise"
    assert list(marks.index) == ["als", "ranker"]


def test_params_digest_ignores_key_order_and_sees_values() -> None:
    a = {"seed": 1, "candidates": {"als": {"factors": 8, "alpha": 1.0}}}
    b = {"candidates": {"als": {"alpha": 1.0, "factors": 8}}, "seed": 1}
    c = {"seed": 1, "candidates": {"als": {"factors": 16, "alpha": 1.0}}}
    assert tables.params_digest(a) == tables.params_digest(b) != tables.params_digest(c)
    assert len(tables.params_digest(a)) == 12


def test_data_source_texts() -> None:
    syn = {"data": {"source": "synthetic", "n_users": 5, "n_items": 3, "n_events": 9}, "seed": 4}
    assert tables.data_source(syn) == "synthetic (5 users, 3 items, 9 events, seed 4)"
    ml = {"data": {"source": "movielens", "variant": "1m", "path": "/d/ml-1m"}}
    assert tables.data_source(ml) == "movielens 1m (/d/ml-1m)"


def _rev(rev: str, name: str | None, factors: int, ndcg: float) -> dict:
    return {
        "rev": rev,
        "name": name,
        "data": {
            "timestamp": "2026-01-01T00:00:00",
            "params": {"params.yaml": {"data": {"seed": 1, "als": {"factors": factors}}}},
            "metrics": {
                "reports/metrics.json": {"data": {"ranker": {"ndcg@10": ndcg}}},
                "reports/ranker.json": {"data": {"trees": 9, "ok": True}},
            },
        },
    }


EXP_SHOW = [
    _rev("workspace", None, 8, 0.3),
    {
        **_rev("a" * 40, "main", 8, 0.3),
        "experiments": [
            {"revs": [_rev("b" * 40, "wide-als", 64, 0.35)]},
            {"revs": [{"rev": "c" * 40, "name": "broken", "data": None}]},
        ],
    },
]


def test_experiments_frame_flattens_runs() -> None:
    frame = tables.experiments_frame(EXP_SHOW)
    assert list(frame["run"]) == ["workspace", "main", "wide-als", "broken"]
    assert list(frame["kind"]) == ["workspace", "commit", "experiment", "experiment"]
    assert frame.loc[2, "param:als.factors"] == 64
    assert frame.loc[2, "metric:ranker.ndcg@10"] == 0.35
    assert frame.loc[2, "metric:ranker.trees"] == 9
    assert "metric:ranker.ok" not in frame.columns  # booleans are not metrics
    assert tables.varying(frame, "param:") == ["param:als.factors"]  # seed is the same
    assert list(tables.filter_runs(frame, "WIDE")["run"]) == ["wide-als"]
    assert list(tables.filter_runs(frame, kinds=["commit"])["run"]) == ["main"]
    assert tables.experiments_frame([]).empty


def test_nearest_excludes_the_item_and_unknown_items_ties_by_index() -> None:
    sims = np.array([1.0, 0.5, 0.9, 0.5, 0.99])
    known = np.array([True, True, True, True, False])
    nn = tables.nearest(sims, known, 0, 3)
    assert nn["item_idx"].tolist() == [2, 1, 3]  # 4 unknown, 0 itself; 1 before 3 (tie)
    assert tables.nearest(sims, known, 4, 3).empty  # an unknown item has no neighbours
    unit = tables.unit_rows(np.array([[3.0, 4.0], [0.0, 0.0]]))
    assert np.allclose(unit, [[0.6, 0.8], [0.0, 0.0]])


def test_top_lists_side_by_side_with_hits_marked() -> None:
    items = pd.DataFrame({"item_idx": [0, 1, 2], "title": ["A", "B", "C"]})
    lists = {
        "als": pd.DataFrame({"item_idx": [2, 0], "rank": [2, 1]}),
        "ranker": pd.DataFrame({"item_idx": [1], "rank": [1]}),
    }
    table = tables.top_lists(lists, items, hits={2}, n=3)
    assert table["als"].tolist() == ["A", "✓ C", ""]
    assert table["ranker"].tolist() == ["B", "", ""]
    assert tables.hit_counts(lists, {2}).to_dict() == {"als": 1, "ranker": 0}


def test_data_page_aggregates() -> None:
    day = 86_400
    inter = pd.DataFrame(
        {
            "user_idx": [0, 0, 1, 2],
            "item_idx": [0, 1, 0, 0],
            "event": ["view", "buy", "view", "view"],
            "timestamp": [0, 10, day, day + 5],
        }
    )
    ev = tables.events_over_time(inter, "D")
    assert ev["events"].tolist() == [1, 1, 2] and ev["event"].tolist() == ["buy", "view", "view"]
    dist = tables.count_distribution(np.array([0, 3, 1, 3]))
    assert dist.to_dict("list") == {"count": [1, 3], "entities": [1, 2]}
    trend = tables.popularity_trend(inter[inter["item_idx"] == 0], "D")
    assert trend["events"].tolist() == [1, 2] and trend["users"].tolist() == [1, 2]
    sizes = tables.split_sizes(
        {"train": {"events": 9, "users": 3}, "ranker_folds": [{"pairs": 2}], "note": "x"}
    )
    assert sizes.values.tolist() == [
        ["train", "events", 9],
        ["train", "users", 3],
        ["extra1 targets", "pairs", 2],
    ]


def _map_frame(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 6)) * 4
    factors = np.repeat(centres, 20, axis=0) + rng.normal(size=(60, 6))
    cats = sp.csr_matrix(np.repeat(np.eye(3), 20, axis=0))
    emap = embedding_map(factors, np.ones(60, bool), cats, ["a", "b", "c"], 3, seed)
    assert emap is not None
    return pd.DataFrame(
        {
            "item_idx": emap.items,
            "x": emap.coords[:, 0],
            "y": emap.coords[:, 1],
            "cluster": np.asarray(emap.labels, dtype=object)[emap.cluster - 1],
            "title": [f"t{i}" for i in emap.items],
            "categories": "a",
            "users": 1,
        }
    )


def test_embedding_map_is_deterministic_and_names_clusters_by_category() -> None:
    a, b = _map_frame(seed=3), _map_frame(seed=3)
    pd.testing.assert_frame_equal(a, b)
    # three well-separated groups of one category each: each cluster named by its category
    assert sorted(a["cluster"].unique()) == [
        "1: a 100% (n=20)",
        "2: b 100% (n=20)",
        "3: c 100% (n=20)",
    ]
    fig = figures.embedding_map(a, highlight=[1, 2], item=0)
    names = [t.name for t in fig.data]
    assert names[:3] == list(dict.fromkeys(a["cluster"]))
    assert names[3:] == ["neighbours", "selected item"]
    assert list(fig.data[-1].x) == [a.set_index("item_idx").loc[0, "x"]]
    plain = figures.embedding_map(a)
    assert len(plain.data) == 3


def test_figures_have_the_traces_of_their_inputs() -> None:
    curves = pd.DataFrame(
        {"model": ["a", "a", "b", "b"], "k": [1, 2, 1, 2], "ndcg": [0.1, 0.2, 0.3, 0.4]}
    )
    fig = figures.metric_vs_k(curves, "ndcg")
    assert [t.name for t in fig.data] == ["a", "b"] and list(fig.data[1].y) == [0.3, 0.4]
    # one colour per model on every chart
    seg = {"all": {"ranker": {"ndcg@10": 0.3}, "als": {"ndcg@10": 0.2}}}
    bars = {t.name: t.marker.color for t in figures.segments(seg, "ndcg@10").data}
    lines = figures.metric_vs_k(curves.replace({"a": "als", "b": "ranker"}), "ndcg").data
    assert {t.name: t.line.color for t in lines} == bars
    assert [t.name for t in figures.segments(seg, "ndcg@10").data] == ["als", "ranker"]
    assert len(figures.metric_vs_k(curves, "ndcg", ["b"]).data) == 1

    recall = pd.DataFrame({"n": [10, 20], "union": [0.5, 0.6], "als": [0.3, 0.4]})
    assert [t.name for t in figures.candidate_recall(recall).data] == ["union", "als"]

    seg = {"all": {"als": {"ndcg@10": 0.2, "users": 9}}, "cold_users": {"als": {"users": 0}}}
    bars = figures.segments(seg, "ndcg@10").data
    assert list(bars[0].x) == ["all", "cold_users"] and bars[0].y[0] == 0.2

    imp = pd.DataFrame({"feature": ["f1", "f2", "f3"], "gain": [1.0, 3.0, 2.0]})
    top = figures.importance(imp, top=2).data[0]
    assert list(top.y) == ["f3", "f2"]  # the largest drawn last, on top

    dist = pd.DataFrame({"count": [1, 10], "entities": [5, 1]})
    fig = figures.count_distribution(dist, "events", "users")
    assert fig.layout.xaxis.type == "log" and fig.layout.yaxis.type == "log"

    runs = pd.DataFrame({"run": ["x", "y"], "p": [1, 2], "q": ["u", "v"], "m": [0.1, 0.2]})
    assert list(figures.param_scatter(runs, "p", "m").data[0].text) == ["x", "y"]
    pc = figures.parallel_coordinates(runs, ["p", "q", "m"], "m").data[0]
    assert [d.label for d in pc.dimensions] == ["p", "q", "m"]
    assert list(pc.dimensions[1].ticktext) == ["u", "v"]

    history = pd.DataFrame(
        {
            "timestamp": [0, 60],
            "title": ["A", "B"],
            "event": ["view", "cart"],
            "categories": ["c", "d"],
        }
    )
    assert sorted(t.name for t in figures.user_timeline(history).data) == ["cart", "view"]

    verdicts = pd.DataFrame(
        {
            "model": ["als"],
            "metric": ["ndcg@10"],
            "paired Δ": [-0.1],
            "low": [-0.2],
            "high": [-0.05],
            "verdict": ["worse"],
        }
    )
    dot = figures.review_intervals(verdicts).data[0]
    assert list(dot.error_x.array) == pytest.approx([0.05])
    for fig in (figures.popularity_profile(pd.DataFrame({"popularity_bucket": [1], "a": [1]})),):
        assert isinstance(fig, go.Figure)


def test_dashboard_command_refuses_a_folder_that_is_not_a_project(tmp_path, capsys) -> None:
    from recpipe.dashboard.__main__ import command, main, parser

    assert main(["--project", str(tmp_path)]) == 2
    assert "is not a recpipe project" in capsys.readouterr().err
    cmd, env = command(parser().parse_args(["--project", str(tmp_path), "--port", "8777"]))
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("dashboard/app.py")
    assert cmd[cmd.index("--server.port") + 1] == "8777"
    assert env["RECPIPE_PROJECT"] == str(tmp_path.resolve())
