"""V-Express: training."""
