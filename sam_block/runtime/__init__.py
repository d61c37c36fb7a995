"""SAM 2 runtime: variants, checkpoints, model loading and prediction. No engine, no supervision."""
