"""Checks of a map rather than maps: sanity checks (:mod:`.sanity`, with the similarity measures
in :mod:`.similarity`, model surgery in :mod:`.randomize` and method routing in
:mod:`.routing`) and faithfulness and localisation metrics (:mod:`.metrics`)."""
