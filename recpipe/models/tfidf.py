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
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import pandas as pd
import scipy.sparse as sp
from pydantic import Field

from recpipe.models.base import ModelConfig, Recommender, SparseScores, TrainData
from recpipe.text import item_documents

SECONDS_PER_DAY = 86_400.0


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
        # Summed rather than averaged: the final L2 normalisation makes the scale irrelevant.
        prof = sp.csr_matrix(hist @ self.item_vectors.astype(np.float64))
        prof.eliminate_zeros()
        norms = np.sqrt(np.asarray(prof.multiply(prof).sum(axis=1)).ravel())
        prof = sp.diags(np.where(norms > 0, 1.0 / np.maximum(norms, 1e-300), 0.0)) @ prof
        return sp.csr_matrix(prof, dtype=np.float32)

    def score_users(self, users: np.ndarray) -> np.ndarray:
        return self.sparse_scores(users).dense()

    def sparse_scores(self, users: np.ndarray) -> SparseScores:
        return self._scores(self.profiles[users], self._known_users[users])

    def score_history(self, history: pd.DataFrame, now: int) -> np.ndarray:
        profile = self._profiles(self._history_data(history), now)
        return self._scores(profile, np.diff(profile.indptr) > 0).dense()[0]

    def _scores(self, profiles: sp.csr_matrix, known: np.ndarray) -> SparseScores:
        """Cosines of the user profiles ``profiles`` with every item (``known``: which of
        the users have a profile); items without a description have none."""
        return SparseScores(profiles @ self._item_vectors_t, known, self._described)
