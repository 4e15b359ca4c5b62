"""A minimal Django site for the end-to-end benchmark, configured from BENCH_* variables."""
