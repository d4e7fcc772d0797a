"""CPU fast paths: the speed machinery the math files call through one line, as ``cuda_kernels/``
is for the GPU.

* ``threads``: ``parallel_rows``, which splits big elementwise work over the cores;
* ``memory``: 64-byte aligned arrays, and glibc's allocator settings (``tl.cpu.tune()``);
* ``scatter``: row scatter-add without ``numpy.add.at``.

Nothing here changes a result; ``tl.reference_mode()`` runs without any of it.
"""
