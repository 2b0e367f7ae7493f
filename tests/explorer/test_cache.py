"""ByteLRU: bounded by the bytes of what it holds, the newest entry always kept."""

from __future__ import annotations

import numpy as np

from gradcam_widget.explorer.cache import ByteLRU


def test_the_least_recently_used_leave_when_the_bytes_run_over():
    evicted = []
    cache = ByteLRU(250, on_evict=lambda key, value: evicted.append(key))
    for key in "abc":
        cache.put(key, np.zeros(100, np.uint8))
    assert list(cache) == ["b", "c"] and evicted == ["a"] and cache.nbytes == 200
    assert cache.get("b") is not None and list(cache) == ["c", "b"]  # b now most recent
    cache.put("d", np.zeros(100, np.uint8))
    assert list(cache) == ["b", "d"] and "c" not in cache
    cache.put("big", np.zeros(1000, np.uint8))  # over the budget alone: kept, on screen
    assert list(cache) == ["big"] and len(cache) == 1


def test_a_value_that_grows_is_counted_again_and_the_count_bound_holds():
    grown = {"a": np.zeros(10, np.uint8)}
    cache = ByteLRU(100, max_items=2, size_of=lambda key: grown[key].nbytes)
    cache.put("a", "a")
    grown["b"] = np.zeros(10, np.uint8)
    cache.put("b", "b")
    grown["a"] = np.zeros(95, np.uint8)
    cache.trim()
    assert list(cache) == ["b"]
    grown["c"] = grown["d"] = np.zeros(1, np.uint8)
    cache.put("c", "c")
    cache.put("d", "d")
    assert list(cache) == ["c", "d"]
    cache.discard(lambda key: key == "c")
    assert list(cache) == ["d"] and cache.get("c", "none") == "none"
    cache.clear()
    assert len(cache) == 0
