"""Stages of the pipeline: each a config dataclass and a `run_*` function, called by the CLI and the API."""
