"""Collective-communication formulas (bytes and seconds per GPU), kept free of model details.

Ring all-reduce of S bytes over p GPUs: each GPU sends 2 (p-1)/p S bytes; time
alpha + 2 (p-1)/p S / BW. All-to-all (expert parallel): each GPU sends the share of its
tokens' top-k copies that live on other GPUs, (ep-1)/ep of them under uniform routing.
Every function takes floats or numpy arrays.
"""

from __future__ import annotations

from typing import Any


def allreduce_bytes_per_gpu(size_bytes: Any, p: int) -> Any:
    """Bytes each GPU sends in a ring all-reduce of ``size_bytes``: 2 (p-1)/p S."""
    if p <= 1:
        return size_bytes * 0.0
    return 2.0 * (p - 1) / p * size_bytes


def tp_allreduce_bytes_per_token(
    hidden_size: int, layers: int, p: int, act_bytes: float = 2.0
) -> float:
    """Per token per GPU per forward: 2 all-reduces per layer of h * b_a bytes each."""
    return 2 * layers * allreduce_bytes_per_gpu(hidden_size * act_bytes, p)


def alltoall_bytes_per_gpu(
    tokens: Any, top_k: int, hidden_size: int, dispatch_bytes: float, combine_bytes: float, ep: int
) -> Any:
    """Dispatch + combine of one MoE layer: T k h (b_dispatch + b_combine) (ep-1)/ep."""
    if ep <= 1:
        return tokens * 0.0
    return tokens * top_k * hidden_size * (dispatch_bytes + combine_bytes) * (ep - 1) / ep


def inter_node_fraction(group: int, gpus_per_node: int) -> float:
    """Share of an all-to-all's remote traffic that leaves the node, for a group of ``group``
    GPUs packed ``gpus_per_node`` to a node: (group - gpn) / (group - 1)."""
    if group <= gpus_per_node or group <= 1:
        return 0.0
    return (group - gpus_per_node) / (group - 1)


def p2p_time_s(size_bytes: Any, bytes_per_s: float, latency_s: float) -> Any:
    """One point-to-point send (pipeline stage boundary)."""
    return latency_s + size_bytes / bytes_per_s
