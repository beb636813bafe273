"""Offline evaluation: golden sets, runs, token-level metrics, statistics and the gate."""
