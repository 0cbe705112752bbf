"""Benchmarks against PyTorch (``ops``: single ops; ``network``: whole networks; ``gpu``: ops on a CUDA GPU
with CUDA events) and the result files they write (``results``). Import the submodule you need."""
