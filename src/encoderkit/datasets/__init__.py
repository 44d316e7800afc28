"""Datasets: readers for real data (MNIST, the Python standard library docstrings, ...)."""
