"""Stands in for an absent clu: importing it fails as if it were not installed."""

raise ImportError("clu is not installed (tests/without_tensorflow hides it)")
