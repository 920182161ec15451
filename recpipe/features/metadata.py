"""What the items table alone says about the catalogue (nothing here reads the history).

The catalogue size, the table's rows by ``item_idx``, the binary item x category matrix and
TF-IDF vectors of the item documents.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.sparse as sp

from recpipe.text import item_documents


def _n_items(items: pd.DataFrame) -> int:
    idx = items["item_idx"].to_numpy(np.int64)
    return int(idx.max()) + 1 if len(idx) else 0


def _by_index(items: pd.DataFrame) -> pd.DataFrame:
    """The items table with row ``i`` holding ``item_idx == i`` (the schema's id map)."""
    out = items.sort_values("item_idx", kind="stable").reset_index(drop=True)
    if not np.array_equal(out["item_idx"].to_numpy(), np.arange(len(out))):
        raise ValueError("items.item_idx must be the contiguous indices 0..n-1")
    return out


def item_category_matrix(items: pd.DataFrame) -> tuple[sp.csr_matrix, list[str]]:
    """Binary item x category CSR matrix (row = ``item_idx``) and the sorted category names.

    Each distinct category of an item is one entry; missing or empty lists give empty rows.
    """
    n_items = _n_items(items)
    if "categories" not in items.columns or n_items == 0:
        return sp.csr_matrix((n_items, 0), dtype=np.float64), []
    cats = pd.Series(items["categories"].to_numpy(), index=items["item_idx"].to_numpy())
    # explode handles lists and arrays (parquet gives arrays); a bare string is one category
    long = cats.explode().dropna()
    long = long.astype(str)
    long = long[long != ""]
    pairs = pd.DataFrame({"item": long.index.to_numpy(np.int64), "cat": long.to_numpy()})
    pairs = pairs.drop_duplicates()
    names = sorted(pairs["cat"].unique().tolist())
    codes = pd.Index(names).get_indexer(pairs["cat"])
    m = sp.csr_matrix(
        (np.ones(len(pairs)), (pairs["item"].to_numpy(), codes)), shape=(n_items, len(names))
    )
    m.sort_indices()
    return m, names


def item_vectors(items: pd.DataFrame) -> sp.csr_matrix:
    """L2-normalised TF-IDF vectors (float64) of the item documents, row = ``item_idx``.

    Documents are those of the TF-IDF candidate model (title, text, ``cat_<name>`` tokens),
    fitted on item metadata only. An empty vocabulary gives a matrix with no columns.
    """
    # imported here: scikit-learn costs ~1 s to import, and the features stage never needs it
    from sklearn.feature_extraction.text import TfidfVectorizer

    items = _by_index(items)
    vectorizer = TfidfVectorizer(sublinear_tf=True, norm="l2", dtype=np.float64)
    try:
        vectors = vectorizer.fit_transform(item_documents(items))
    except ValueError:
        # no item has any token: nothing to compare, every similarity is undefined
        return sp.csr_matrix((len(items), 0), dtype=np.float64)
    return sp.csr_matrix(vectors, dtype=np.float64)
