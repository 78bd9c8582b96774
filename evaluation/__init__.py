"""V-Express: evaluation."""
