"""V-Express: model."""
