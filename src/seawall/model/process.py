"""How the loaded model shares its process: numpy's BLAS on one thread, load-time memory handed back.

Both act on the whole process, so only the run-time loader calls them (``TextClassifier.load``);
training builds its classifiers without loading and keeps every BLAS thread.
"""

from __future__ import annotations

import ctypes


def one_blas_thread() -> None:
    """Runs numpy's BLAS on one thread from now on. Beside encoders with their own thread pools the
    heads' products are small, and OpenBLAS's threads fighting those pools cost more than they give
    (2 cores, ``bench/moderation_api.py --contextual on``, alternated runs: 50 concurrent clients
    276 and 260 -> 354 and 401 texts/s)."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def release_freed_memory() -> None:
    """Hands the C heap's freed pages back to the operating system (glibc's ``malloc_trim``; nothing
    elsewhere). Building the encoders' sessions frees tens of megabytes of temporaries that glibc
    would otherwise keep for the life of the process (measured: 322 -> 261 MB resident after
    loading the shipped model)."""
    # The process's own symbols include the C library's; only glibc has malloc_trim.
    try:
        trim = getattr(ctypes.CDLL(None), "malloc_trim", None)
    except (OSError, TypeError):  # Windows has no handle for the process's own symbols
        return
    if trim is not None:
        trim(0)
