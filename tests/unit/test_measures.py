"""profiler.measures: each definition by hand, vectorised and for one request."""

from __future__ import annotations

import numpy as np
import pytest

from profiler import measures as m
from profiler.spec import SloSpec

NAN = float("nan")


def a(*v: float) -> np.ndarray:
    return np.array(v, dtype=np.float64)


def _cols() -> m.Columns:
    # 0: ok, 1: ok one token, 2: error after a first token, 3: ok with two samples, 4: never sent
    return m.Columns(
        id=np.arange(5),
        outcome=np.array(["ok", "ok", "error", "ok", "error"]),
        intended_start_s=a(0.0, 1.0, 2.0, 3.0, 4.0),
        send_s=a(0.5, 1.0, 2.0, 3.5, NAN),
        first_token_s=a(1.0, 1.5, 2.25, 4.0, NAN),
        end_s=a(3.0, 1.5, 2.75, 6.0, NAN),
        prompt_tokens=a(10, 10, 10, 10, NAN),
        output_tokens=a(11, 1, 4, 12, NAN),
        n=a(1, 1, 1, 2, 1),
        queue_wait_s=a(0.25, NAN, 0.0, 0.1, NAN),
        itl_source=lambda _selected: iter(()),
    )


def test_latencies_by_hand() -> None:
    ttft, tpot, e2e = m.latencies(_cols())
    np.testing.assert_allclose(ttft, [0.5, 0.5, 0.25, 0.5, NAN])
    # E2E of successful requests only
    np.testing.assert_allclose(e2e, [2.5, 0.5, NAN, 2.5, NAN])
    # (2.5 - 0.5) / (11 - 1); one token: none; failed: none; 12 tokens over 2 samples: 2 / 5
    np.testing.assert_allclose(tpot, [0.2, NAN, NAN, 0.4, NAN])


def test_from_intended_and_dispatch_lag_by_hand() -> None:
    c = _cols()
    ttft_i, e2e_i = m.from_intended(c)
    np.testing.assert_allclose(ttft_i, [1.0, 0.5, 0.25, 1.0, NAN])
    np.testing.assert_allclose(e2e_i, [3.0, 0.5, NAN, 3.0, NAN])
    lag = m.dispatch_lag(c.intended_start_s, c.send_s, c.queue_wait_s)
    np.testing.assert_allclose(lag, [0.25, 0.0, 0.0, 0.4, NAN])  # queue wait NaN: none
    np.testing.assert_allclose(m.dispatch_lag(c.intended_start_s, c.send_s, None)[:2], [0.5, 0.0])


def test_tpot_needs_more_than_one_token_a_sample_and_a_sample() -> None:
    ttft, e2e = a(0.1, 0.1, 0.1, 0.1), a(1.1, 1.1, 1.1, 1.1)
    got = m.tpot(ttft, e2e, a(2, 2, 3, NAN), a(1, 2, 0, 1))  # 2 a sample, 1 a sample, ...
    np.testing.assert_allclose(m.tpot(ttft[:1], e2e[:1], a(4), a(2)), [1.0])
    np.testing.assert_allclose(got, [1.0, NAN, NAN, NAN])


def test_one_request_calls_the_same_definitions() -> None:
    c = _cols()
    ttft, tpot, e2e = m.latencies(c)
    for i in range(5):
        send, first = m.scalar(c.send_s[i]), m.scalar(c.first_token_s[i])
        t = m.ttft(send, first)
        e = m.e2e(send, m.scalar(c.end_s[i]), c.outcome[i] == "ok")
        p = m.tpot(t, e, m.scalar(c.output_tokens[i]), float(c.n[i]))
        assert m.optional(t) == (None if np.isnan(ttft[i]) else pytest.approx(ttft[i]))
        assert m.optional(e) == (None if np.isnan(e2e[i]) else pytest.approx(e2e[i]))
        assert m.optional(p) == (None if np.isnan(tpot[i]) else pytest.approx(tpot[i]))
    assert m.scalar(None) != m.scalar(None)  # NaN
    assert m.optional(NAN) is None and m.optional(2.0) == 2.0


def test_itl_gaps_per_sample_and_shares() -> None:
    # request 0: one sample; request 1: two samples interleaved (choice 0, 1, 0, 1)
    group = np.array([0, 0, 0, 1, 1, 1, 1])
    t = a(1.0, 1.5, 1.75, 2.0, 2.1, 2.5, 2.7)
    np.testing.assert_allclose(m.itl_gaps(group, t), [NAN, 0.5, 0.25, NAN, 0.1, 0.4, 0.2])
    choice = np.array([0, 0, 0, 0, 1, 0, 1])
    np.testing.assert_allclose(m.itl_gaps(group, t, choice), [NAN, 0.5, 0.25, NAN, NAN, 0.5, 0.6])
    values, weights = m.itl_shares(a(0.5, 0.3), np.array([2, 1]))
    np.testing.assert_allclose(values, [0.25, 0.3])
    assert weights is not None and weights.tolist() == [2, 1]
    values, weights = m.itl_shares(a(0.5, 0.3), np.array([1, 0]))  # a token-less chunk: one
    assert values.tolist() == [0.5, 0.3] and weights is None


def test_window_selects_by_hand() -> None:
    c = _cols()
    whole = m.measured_window(c)
    assert (whole.start, whole.end, whole.seconds) == (0.5, 6.0, 5.5)
    assert m.in_window(c, whole).all()
    win = m.measured_window(c, warmup_s=0.5, cooldown_s=3.0)
    assert (win.start, win.end) == (1.0, 3.0)
    # 0 sent before the start; 3 ends after the end; 4 never sent, intended after the end
    assert m.in_window(c, win).tolist() == [False, True, True, False, False]
    assert m.completed_in_window(c, win).tolist() == [True, True, True, False, False]
    eaten = m.measured_window(c, warmup_s=5.0, cooldown_s=5.0)
    assert (eaten.start, eaten.end) == (0.5, 6.0)  # nothing left: the whole run


def test_window_tokens_by_hand() -> None:
    c = _cols()
    ok = c.outcome == "ok"
    whole = m.window_tokens(c, m.measured_window(c), ok)
    assert (whole.output, whole.prompt, whole.straddling) == (24.0, 30.0, 0)
    win = m.Window(1.0, 5.0, 0.5, 1.0)
    got = m.window_tokens(c, win, ok)
    # 1 whole (1 token); 0 (first token 1.0, end 3.0) whole; 3 cut at 5.0, interpolated
    # between its first token 4.0 and end 6.0: half of 12
    assert got.output == pytest.approx(11 + 1 + 6)
    assert (got.straddling, got.interpolated) == (1, 1)
    assert got.prompt == 30.0  # first tokens 1.0, 1.5 and 4.0 inside


def test_meets_slo_at_the_boundary_and_for_one_request() -> None:
    slo = SloSpec(ttft_s=0.5, tpot_s=0.2, e2e_s=2.5)
    c = _cols()
    ttft, tpot, e2e = m.latencies(c)
    got = m.meets_slo(slo, c.outcome == "ok", ttft, tpot, e2e)
    # 0: each value exactly at its limit; 1: no TPOT; 2, 4 failed; 3: TPOT 0.4 > 0.2
    assert got.tolist() == [True, True, False, False, False]
    for i in range(5):
        one = m.meets_slo(slo, bool(c.outcome[i] == "ok"), ttft[i], tpot[i], e2e[i])
        assert bool(one) == got[i]
    assert m.meets_slo(slo, True, 0.5, NAN, 2.5) is True
    assert m.meets_slo(slo, True, NAN, NAN, 2.0) is False  # no first token: TTFT not met
    assert not m.slo_is_set(SloSpec()) and not m.slo_is_set(None)


def test_slo_attainment_by_hand() -> None:
    c = _cols()
    slo = SloSpec(ttft_s=0.75, target_fraction=0.5)
    everything = np.ones(5, dtype=bool)
    got = m.slo_attainment(slo, c, everything, everything, 4.0, open_loop=True)
    # from the send: 0, 1, 3 (TTFT 0.5) of 5; from the intended start only 1 (0.5)
    assert got["from_send"] == {"fraction": 0.6, "requests_per_s": 0.75, "met": 3,
                                "meets_target": True}  # fmt: skip
    assert got["from_intended"]["met"] == 1 and got["from_intended"]["meets_target"] is False
    assert got["headline"] == "from_intended" and got["met"] == 1
    closed = m.slo_attainment(slo, c, everything, everything, 4.0, open_loop=False)
    assert closed["headline"] == "from_send" and closed["from_intended"] is None
    assert (
        m.slo_attainment(SloSpec(), c, everything, everything, 4.0, open_loop=True)["slo"] is None
    )


def test_meets_target_at_the_boundary() -> None:
    assert m.meets_target(0.9, 0.9) and not m.meets_target(0.89, 0.9)
