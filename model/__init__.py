"""Power-state classifiers for LLM inference power traces."""
