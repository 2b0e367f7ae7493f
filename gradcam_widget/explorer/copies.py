"""The randomised copies of a session's model (Adebayo et al.'s model-randomisation check):
made from a copy of the weights, never the model itself.
"""

from __future__ import annotations

import numpy as np

from gradcam_widget.checks import sanity
from gradcam_widget.engine import unwrap

CLONES = 2  # randomised copies of the model kept per session
RANDOM_SEED = 0  # the seed of the re-initialised weights


class Randomized:
    """One randomised copy of the session's model, as the session captures with it.

    Attributes:
        model: what ``capture`` takes: the copy, or a :class:`~gradcam_widget.engine.ModelRef`
            around it (the entry's preprocess and class names).
        keras_model: the copy.
        names: the blocks re-initialised, top first.
    """

    def __init__(self, model, keras_model, names: tuple[str, ...]):
        self.model = model
        self.keras_model = keras_model
        self.names = names

    @property
    def nbytes(self) -> int:
        """Bytes of the copy's weights."""
        return sum(
            int(np.prod(variable.shape)) * np.dtype(str(variable.dtype)).itemsize
            for variable in self.keras_model.weights
        )


def randomized(model, blocks: int) -> Randomized:
    """A copy of ``model`` (a ``keras.Model`` or an entry) whose top ``blocks`` blocks are
    re-initialised from their initializers, seeded with :data:`RANDOM_SEED`; an entry's copy
    keeps its preprocess and class names.

    Raises:
        ValueError: for a model that cannot be copied.
    """
    given = unwrap(model)
    copy, names = sanity.randomized_copy(given.model, blocks, RANDOM_SEED)
    entry = copy if given.model is model else given._replace(model=copy)  # an entry: its parts
    return Randomized(entry, copy, names)
