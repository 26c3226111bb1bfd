"""Power traces for traffic that was never measured, and how close they come to measured ones."""
