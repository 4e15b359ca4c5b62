"""Side-by-side benchmarks of pooled_clients against the floor and its peers.

Run ``python -m benchmarks --help``; ``docs/benchmarks.md`` explains the method and holds the
latest table.
"""
