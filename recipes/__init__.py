"""Training recipes: ``imitlab train --config recipes/<name>.toml`` (TrainConfig knobs; see training/run_config.py)."""
