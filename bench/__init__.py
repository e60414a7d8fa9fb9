"""The benchmark suite of cab_bench: one command (`python -m bench.run_all`, from the repository root), its shared
cases (`bench.cases`), its sections (`bench_ops`, `bench_step`, `bench_gen`), the report (`bench.report`) and
one-off studies (`bench.studies`)."""
