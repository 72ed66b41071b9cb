"""The processes a run starts: producers, workers and an HTTP pull client."""
