"""The retry delays of the Kubernetes client: exponential, capped, jittered, and iterable afresh
(kopf iterates them anew for every request)."""

from __future__ import annotations

import itertools

from xds_operator.kube.client import WRITE_BACKOFF, ExponentialBackoff


def test_delays_grow_exponentially_up_to_the_cap_with_jitter():
    delays = list(ExponentialBackoff(first=0.1, factor=2, cap=1.0, attempts=8))
    assert len(delays) == 8
    for n, delay in enumerate(delays):
        nominal = min(1.0, 0.1 * 2 ** n)
        assert 0.8 * nominal <= delay <= 1.2 * nominal, (n, delay)
    assert max(delays) <= 1.2


def test_each_iteration_starts_again_and_forever_means_forever():
    backoff = ExponentialBackoff(first=0.5, cap=30.0, attempts=None)
    assert next(iter(backoff)) <= 0.6 and next(iter(backoff)) <= 0.6
    assert len(list(itertools.islice(backoff, 1000))) == 1000
    assert list(WRITE_BACKOFF) and len(list(WRITE_BACKOFF)) == len(list(WRITE_BACKOFF)) == 8
