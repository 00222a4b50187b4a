"""infprof: GPU inference-throughput profiler."""

__version__ = "0.1.0"
