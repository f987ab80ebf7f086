"""Stands in for an absent tensorflow_datasets: importing it fails as if it were not installed."""

raise ImportError("tensorflow_datasets is not installed (tests/without_tensorflow hides it)")
