"""The classroom app's shared models: loaded once whoever asks, one pass queue each, explorers
with bounded caches; the default session bound; memory handed back."""

from __future__ import annotations

import threading

import pytest

from gradcam_widget.classroom import shared as shared_models
from gradcam_widget.classroom.shared import SharedModels, default_sessions, give_back_memory
from gradcam_widget.data import models


def test_each_model_is_loaded_once_and_shares_its_queue():
    shared = SharedModels("shapes")
    got = []
    threads = [threading.Thread(target=lambda: got.append(shared.model("shapes_vit")))
               for _ in range(4)]  # fmt: skip
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert len(got) == 4 and all(model is got[0] for model in got)
    assert shared.queue("shapes_vit") is shared.queue("shapes_vit")
    assert shared.queue("shapes") is not shared.queue("shapes_vit")
    assert set(shared.loaded()) == {"shapes", "shapes_vit"}


def test_explorers_share_the_model_and_queue_and_bound_their_caches():
    shared = SharedModels()
    first, second = shared.explorer("shapes"), shared.explorer("shapes")
    try:
        assert first.session.model is second.session.model is shared.model("shapes")
        assert first.session.passes is second.session.passes is shared.queue("shapes")
        assert first.session.captures.budget == shared_models.CACHE_BYTES
        assert first.session.results.budget == shared_models.RESULT_BYTES
        before = shared.queue("shapes").captures
        second.set_image("shape scene 1000001")
        assert shared.queue("shapes").captures == before + 1  # through the queue
    finally:
        first.close()
        second.close()


def test_a_bad_first_model_is_refused():
    with pytest.raises(ValueError, match="unknown model"):
        SharedModels("nope")


def test_the_default_session_bound():
    assert default_sessions(8 * 10**9) == (4 * 10**9 - 2**30) // (64 * 2**20)  # 8 GB: 43
    assert default_sessions(2 * 10**9) == 4  # at least 4
    assert default_sessions(10**13) == 200  # at most 200
    assert 4 <= default_sessions() <= 200


def test_giving_memory_back_is_harmless():
    assert shared_models.bound_arenas(64) in (True, False)  # above the default: no change
    give_back_memory()
    assert models.load("shapes") is models.load("shapes")
