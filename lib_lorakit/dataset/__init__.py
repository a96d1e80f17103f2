"""Datasets: import, index, duplicates, repeats and the dataset report."""
