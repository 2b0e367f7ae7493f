"""The interactive side: the widget (:mod:`.widget`), the session it drives
(:mod:`.session`), the static HTML export (:mod:`.export`)."""
