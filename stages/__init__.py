"""Recommender pipeline: DVC stage entry points (``python -m stages.<stage>``).

Stage modules here are thin: they parse paths, load their own params block, read inputs,
call the library (:mod:`recpipe`) and write outputs atomically.

Python imports this package before the stage module, hence before numpy: the place to
pin the CPU kernels numpy and OpenBLAS choose (:func:`recpipe.stage.pin_numerics`), so that
every machine computes the same floats; and to have malloc keep freed memory for reuse
(:func:`recpipe.stage.keep_freed_memory`) before any large allocation.
"""

from recpipe.stage import keep_freed_memory, pin_numerics

NUMERICS = pin_numerics()
"""What :func:`pin_numerics` did in this process: ``python -c "import stages;
print(stages.NUMERICS)"`` says what a stage gets on this machine."""

MALLOC = keep_freed_memory()
"""What :func:`keep_freed_memory` did in this process."""
