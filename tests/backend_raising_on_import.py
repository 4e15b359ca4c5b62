"""A BACKEND module with a bug: importing it raises (not an ImportError)."""

raise RuntimeError("this module refuses to load")
