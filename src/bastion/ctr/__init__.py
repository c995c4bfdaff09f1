"""Multi-scenario multi-modal CTR (AntM2C): schema, streaming pipeline, models, tasks, metrics."""
