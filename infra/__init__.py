"""V-Express: infra."""
