"""The BiGRU power-state classifier: model, fast kernel, training loop, metrics, synthetic trace."""
