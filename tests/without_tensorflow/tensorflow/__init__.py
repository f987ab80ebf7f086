"""Stands in for an absent tensorflow: importing it fails as if it were not installed."""

raise ImportError("tensorflow is not installed (tests/without_tensorflow hides it)")
