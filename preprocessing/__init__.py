"""V-Express: preprocessing."""
