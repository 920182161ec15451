"""Recommender pipeline: DVC stage entry points (``python -m stages.<stage>``).

Stage modules here are thin: they parse paths, load their own params block, read inputs,
call the library (:mod:`recpipe`) and write outputs atomically.

Python imports this package before the stage module, hence before numpy: the place to
pin the CPU kernels numpy and OpenBLAS choose (:func:`recpipe.stage.pin_numerics`), so that
every machine computes the same floats.
"""

from recpipe.stage import pin_numerics

NUMERICS = pin_numerics()
"""What :func:`pin_numerics` did in this process: ``python -c "import stages;
print(stages.NUMERICS)"`` says what a stage gets on this machine."""
