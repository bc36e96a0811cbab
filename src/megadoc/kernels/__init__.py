"""The kernels: one folder per op, each with its plain-PyTorch `reference.py` (the definition),
its `triton.py` (the CUDA kernels that must equal it) and the entry points in `__init__.py` that
pick one. `with backend("reference"):` chooses the references on the GPU too (kernels/backend.py)."""

from megadoc.kernels.backend import BACKENDS, backend, current_backend, select_backend

__all__ = ["BACKENDS", "backend", "current_backend", "select_backend"]
