"""TF-IDF content model: users are described by the text of what they interacted with.

Each catalogue item becomes one document: its title, its text and one token per category
(``cat_<name>``). A scikit-learn ``TfidfVectorizer`` is fitted on these documents, i.e. on
item metadata only (never on interactions or targets), and gives each item an L2-normalised
vector ``v_i``. A user's profile is ``sum_j w_uj v_j`` over the history, with ``w_uj`` the
summed event weights of the pair times an exponential recency decay, normalised to unit
length; ``score(u, i) = profile_u . v_i``, the cosine between profile and item.

Every catalogue item with a non-empty description is scored, including items nobody has
interacted with (cold items): that is what this model is for. Items whose document is empty
after tokenisation have no score (NaN), and so do users with no history (or whose history
has no describable item). A history given at request time (``score_history``) gets its
profile from the same function as the fit's users, decayed to the ``now`` it is given.

Two routes give the same floats, bit for bit. Each score is a float32 sum over the terms the
profile and the item share, and both routes add those products in ascending term order
(profiles and item vectors keep their terms sorted):

- the sparse product ``profiles @ item_vectors.T`` walks each profile's terms. It costs the
  summed document frequency of the profile's terms, and it pays when profiles are short or
  their terms rare;
- the dense route multiplies the item vectors by a dense block of profiles (each item row
  adds its terms' profile columns). It costs users x the item vectors' stored entries, plus
  the dense users x items block. It pays when profiles reach most items through a few
  common words, as in a catalogue whose documents share a small vocabulary. There the sparse
  product is nearly dense, and its cost grows as users x items x terms.

:meth:`TfIdf.sparse_scores` picks one per block of users from those counts. The lists and
scores do not depend on the pick.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from recpipe.models.base import (
    BLOCK_THREADS,
    ModelConfig,
    Recommender,
    SparseScores,
    TrainData,
)
from recpipe.text import item_documents

SECONDS_PER_DAY = 86_400.0

#: measured on 2 cores (62,423 synthetic items, 1,024 users a block): the sparse product
#: costs about 3.3 ns a multiply-add (summed document frequency of the profiles' terms), the
#: dense route 0.2 ns a multiply-add (users x stored item entries) plus about 14 ns a cell of
#: the users x items block (layout and dense ranking), against about 10 ns a stored entry
#: for ranking the sparse product
SPARSE_NS_PER_PRODUCT = 3.3
DENSE_NS_PER_PRODUCT = 0.2
DENSE_NS_PER_CELL = 14.0
SPARSE_NS_PER_ENTRY = 10.0
#: users per dense product: a block's profile columns then stay in cache
DENSE_CHUNK_USERS = 256
#: at most this many cells of dense profile columns at once (fewer users per product when
#: the vocabulary is large: 64 MiB of float32), each costing about 1 ns to lay out
DENSE_CHUNK_CELLS = 1 << 24
DENSE_NS_PER_TERM_CELL = 1.0


class TfIdfConfig(ModelConfig):
    """Settings of :class:`TfIdf` (``candidates.tfidf``)."""

    min_df: int = Field(
        1,
        ge=1,
        description="drop terms that occur in fewer than this many item documents",
    )
    max_df: float = Field(
        1.0,
        gt=0,
        le=1,
        description="drop terms that occur in more than this share of item documents "
        "(corpus-specific stop words); 1.0 keeps all",
    )
    max_features: int | None = Field(
        None,
        ge=1,
        description="keep only the this many most frequent terms; null = no limit",
    )
    ngram_max: int = Field(
        1,
        ge=1,
        le=3,
        description="longest word n-gram used as a term (1 = single words, 2 adds pairs)",
    )
    sublinear_tf: bool = Field(
        True,
        description="use 1 + log(tf) instead of raw term counts, so repeated words in long "
        "texts do not dominate",
    )
    stop_words: Literal["english"] | None = Field(
        None,
        description="built-in stop-word list removed before counting (scikit-learn's "
        "'english'), or null to keep every word (idf already discounts common words, and "
        "short titles lose too much to the list)",
    )
    half_life_days: float | None = Field(
        None,
        gt=0,
        description="recency decay of the history in the user profile: an event "
        "half_life_days older than the fold's last event counts half; null = no decay",
    )


def time_decay(timestamps: np.ndarray, now: int, half_life_days: float | None) -> np.ndarray:
    """Weight ``0.5 ** (age / half_life)`` of events at ``timestamps`` seen from ``now``."""
    if half_life_days is None:
        return np.ones(len(timestamps), dtype=np.float64)
    age = np.maximum(now - np.asarray(timestamps, dtype=np.float64), 0.0)
    return np.exp2(-age / (half_life_days * SECONDS_PER_DAY))


class TfIdf(Recommender):
    """Content-based recommender: cosine between TF-IDF item vectors and user profiles."""

    name = "tfidf"
    config_class = TfIdfConfig
    config: TfIdfConfig
    supports_history = True
    block_threads = BLOCK_THREADS
    holds_scores = True
    fit_imports = ("sklearn.feature_extraction.text",)

    def _fit(self, data: TrainData) -> None:
        # imported here: scikit-learn costs ~1 s to import, and the stages that only read
        # item_documents (features) never fit a vectorizer
        from sklearn.feature_extraction.text import TfidfVectorizer

        cfg = self.config
        vectorizer = TfidfVectorizer(
            min_df=cfg.min_df,
            max_df=cfg.max_df,
            max_features=cfg.max_features,
            ngram_range=(1, cfg.ngram_max),
            sublinear_tf=cfg.sublinear_tf,
            stop_words=cfg.stop_words,
            norm="l2",
            dtype=np.float32,
        )
        try:
            vectors = vectorizer.fit_transform(item_documents(data.items))
        except ValueError as exc:
            # e.g. no item has any text left after stop words and the df limits
            raise ValueError(
                f"tfidf: cannot build the item vocabulary ({exc}); check the item metadata "
                "and candidates.tfidf.min_df / max_df / stop_words"
            ) from exc
        # Keep only the vocabulary: the fitted vectorizer also holds the id() of its stop-word
        # list, which would make the pickled model differ from run to run.
        self.vocabulary: dict[str, int] = dict(sorted(vectorizer.vocabulary_.items()))
        self.item_vectors = sp.csr_matrix(vectors, dtype=np.float32)
        self.item_vectors.sort_indices()  # the routes' shared summation order (module doc)
        self._item_vectors_t = sp.csr_matrix(self.item_vectors.T)
        self._described = np.diff(self.item_vectors.indptr) > 0
        self.profiles = self._profiles(data, data.now)
        self._known_users = np.diff(self.profiles.indptr) > 0

    def _profiles(self, data: TrainData, now: int) -> sp.csr_matrix:
        """Unit-length user x term profiles (empty rows for users with nothing to describe),
        the history's events decayed to ``now``."""
        inter = data.interactions
        if len(inter) == 0:
            return sp.csr_matrix((data.n_users, self.item_vectors.shape[1]), dtype=np.float32)
        w = inter["weight"].to_numpy(np.float64) * time_decay(
            inter["timestamp"].to_numpy(), now, self.config.half_life_days
        )
        hist = sp.csr_matrix(
            (w, (inter["user_idx"].to_numpy(), inter["item_idx"].to_numpy())),
            shape=(data.n_users, data.n_items),
        )
        hist.sum_duplicates()
        vectors = self.item_vectors
        used = np.unique(hist.indices)
        if 2 * len(used) < hist.shape[1]:
            # fewer than half the items touched (the service's one history): only their
            # rows, converted to float64, instead of the whole catalogue's; the product
            # meets the same terms in the same order, so it is the same to the bit
            vectors = vectors[used]
            hist = sp.csr_matrix(
                (hist.data, np.searchsorted(used, hist.indices), hist.indptr),
                shape=(hist.shape[0], len(used)),
            )
        # Summed rather than averaged: the final L2 normalisation makes the scale irrelevant.
        prof = sp.csr_matrix(hist @ vectors.astype(np.float64))
        prof.eliminate_zeros()
        norms = np.sqrt(np.asarray(prof.multiply(prof).sum(axis=1)).ravel())
        # each row scaled to unit length in place: what a diagonal matrix's product gives,
        # which drops the rows it scales by 0 (no norm, or not a number) and every product
        # that is 0 (an underflow)
        scale = np.where(norms > 0, 1.0 / np.maximum(norms, 1e-300), 0.0)
        per_entry = np.repeat(scale, np.diff(prof.indptr))
        prof.data *= per_entry
        prof.data[per_entry == 0] = 0.0  # (0 times NaN is NaN)
        prof.eliminate_zeros()
        prof = sp.csr_matrix(prof, dtype=np.float32)
        # a product leaves each row's terms in the order it met them: sorted, a score sums
        # its terms in one order whichever route computes it (module doc)
        prof.sort_indices()
        return prof

    def _check_state(self) -> None:
        super()._check_state()
        # a model saved before the terms were kept sorted: sort them now, as a fit would
        for name in ("profiles", "item_vectors", "_item_vectors_t"):
            m = getattr(self, name, None)  # (an unfitted model has none)
            if m is not None and not m.has_sorted_indices:
                m.sort_indices()

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return self._dense_scores(self.profiles[users], self._known_users[users])

    def sparse_scores(self, users: np.ndarray) -> SparseScores | None:
        profiles = self.profiles[users]
        if self.dense_route_pays(profiles):
            return None  # recommend and score then take score_users: the dense route
        return self._scores(profiles, self._known_users[users])

    def dense_route_pays(self, profiles: sp.csr_matrix) -> bool:
        """Whether the dense route (module doc) is the cheaper way to rank and score the
        users of ``profiles``, by the measured costs above."""
        rows, cols = profiles.shape[0], self.item_vectors.shape[0]
        document_frequency = np.diff(self._item_vectors_t.indptr)
        products = float(document_frequency[profiles.indices].sum())
        entries = min(products, float(rows) * cols)  # what the sparse product can store
        sparse = SPARSE_NS_PER_PRODUCT * products + SPARSE_NS_PER_ENTRY * entries
        dense = (
            DENSE_NS_PER_PRODUCT * rows * self.item_vectors.nnz
            + DENSE_NS_PER_CELL * float(rows) * cols
            + DENSE_NS_PER_TERM_CELL * float(rows) * profiles.shape[1]
        )
        return dense < sparse

    def score_history(self, history: pd.DataFrame, now: int) -> np.ndarray:
        profile = self._profiles(self._history_data(history), now)
        return self._scores(profile, np.diff(profile.indptr) > 0).dense()[0]

    def _scores(self, profiles: sp.csr_matrix, known: np.ndarray) -> SparseScores:
        """Cosines of the user profiles ``profiles`` with every item (``known``: which of
        the users have a profile); items without a description have none."""
        return SparseScores(profiles @ self._item_vectors_t, known, self._described)

    def _dense_scores(self, profiles: sp.csr_matrix, known: np.ndarray) -> np.ndarray:
        """:meth:`_scores` as a dense block, by the dense route: item vectors times dense
        profile columns, up to :data:`DENSE_CHUNK_USERS` users at a time (fewer with a large
        vocabulary: :data:`DENSE_CHUNK_CELLS`). scipy adds an item
        row's products in its (sorted) term order, as the sparse product adds a profile's. A
        term one side lacks adds an exact 0 (both sums start at +0, and adding to +0 never
        gives -0), and a sum the sparse product leaves out as 0 is 0 here too."""
        out = np.empty((profiles.shape[0], self.item_vectors.shape[0]), dtype=np.float32)
        step = max(1, min(DENSE_CHUNK_USERS, DENSE_CHUNK_CELLS // max(profiles.shape[1], 1)))
        for start in range(0, profiles.shape[0], step):
            chunk = profiles[start : start + step]
            # items x users; float32 throughout (scipy keeps the inputs' type, and lays the
            # transposed columns out once)
            block = self.item_vectors @ chunk.toarray().T
            out[start : start + chunk.shape[0]] = block.T
        out[:, ~self._described] = np.nan
        out[~known] = np.nan
        return out
