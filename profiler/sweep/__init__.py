"""Sweeps: a grid of server configurations x load levels x workloads, or an SLO search per
configuration; one run directory per point under one sweep directory with ``index.json``."""
