"""What works: the measurements behind the shipped models and their defaults."""
