"""The ``movielens`` source: GroupLens MovieLens data sets, from a local copy or the official zip.

One module per layer:

- :mod:`~recpipe.sources.movielens.loader`: ``MovieLensConfig`` and ``load_movielens``, the
  source's entry point, which puts the layers below together;
- :mod:`~recpipe.sources.movielens.variants`: the releases and the exact file layout of each;
- :mod:`~recpipe.sources.movielens.download`: the official zips, downloaded once and verified
  against pinned checksums;
- :mod:`~recpipe.sources.movielens.files`: the files of a local copy, in a folder or a zip,
  and how their text is decoded;
- :mod:`~recpipe.sources.movielens.parsing`: text split into fields and integer ids checked,
  shared by the readers;
- :mod:`~recpipe.sources.movielens.ratings`: the ratings file as interactions;
- :mod:`~recpipe.sources.movielens.items`: the movies (genres, year, tags) as items;
- :mod:`~recpipe.sources.movielens.users`: the users' demographics (100k and 1m).

Nothing is re-exported here: import each name from the module that defines it (the DVC
dependencies of a stage are read from its import statements).
"""
