"""One-off studies that use the suite's cases and step (each runs as `python -m bench.studies.<name>`)."""
