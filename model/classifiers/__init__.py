"""The BiGRU power-state classifier: model, fast kernel, training loop, calibration, metrics, synthetic trace."""
