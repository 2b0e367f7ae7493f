"""Checks of a map rather than maps: sanity checks (:mod:`.sanity`) and faithfulness and
localisation metrics (:mod:`.metrics`)."""
