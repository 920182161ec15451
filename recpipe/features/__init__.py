"""User, item and user-item pair features for the learning-to-rank stage.

Everything here is computed from one fold's *history* only (never its targets), seen from
``now``, the fold's last history timestamp (:func:`~recpipe.features.history.history_now`).
The functions are pure: they read the canonical tables (``history`` with ``user_idx``,
``item_idx``, ``rating``, ``weight``, ``timestamp``; the ``items`` and ``users`` id maps with
their metadata) and return frames; nothing is fitted on interactions except counts.

- :func:`~recpipe.features.users.user_features`: one row per user of ``users`` (index
  ``user_idx``).
- :func:`~recpipe.features.items.item_features`: one row per catalogue item (index
  ``item_idx``).
- :func:`~recpipe.features.pairs.pair_features`: one row per candidate ``(user_idx,
  item_idx)`` pair, in the order and with the index of the given frame.

The other modules: :mod:`~recpipe.features.config` (``FeaturesConfig``),
:mod:`~recpipe.features.docs` (what every column means, and the conventions all follow),
:mod:`~recpipe.features.history` (a fold's history as flat arrays),
:mod:`~recpipe.features.metadata` (what the items table alone says: size, categories, TF-IDF
vectors), :mod:`~recpipe.features.attributes` (the tables' own columns as features) and
:mod:`~recpipe.features.arrays` (grouped reductions and lookups on flat arrays).

Nothing is re-exported here: import each name from the module that defines it (the DVC
dependencies of a stage are read from its import statements).
"""
