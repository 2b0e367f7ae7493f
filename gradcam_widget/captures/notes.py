"""The warnings a pass leaves with its captures: each way the score explained is not what the
caller may think (:func:`score_warnings`), and maps that are empty by construction
(:func:`gradient_notes`). Each is one line, issued as ``UserWarning`` and kept in
:attr:`Capture.warnings <gradcam_widget.captures.record.Capture.warnings>`."""

from __future__ import annotations

import numpy as np

from gradcam_widget.captures import targets
from gradcam_widget.engine import PassResult, layers

__all__ = ["gradient_notes", "score_warnings", "token_notes"]


def score_warnings(
    facts: PassResult, target: targets.Target, score: str, head, scores, names=()
) -> tuple:
    """One line for each way the requested score is not what the caller may think.

    Args:
        facts: what the traced pass found (``squashed`` per output).
        target: the target explained; only the output it reads matters.
        score: ``"logit"`` or ``"probability"``.
        head: the squashing head of a one-output model, or ``None``.
        scores: ``(K,)`` scores of one image.
        names: the model's output names, in order (to find a named output).
    """
    notes = []
    output = target.output
    if isinstance(output, str) and output in names:
        output = list(names).index(output)
    if isinstance(output, int) and 0 <= output < len(facts.squashed):
        squashed = facts.squashed[output]
    elif len(facts.squashed) == 1 or isinstance(target, targets.FunctionTarget):
        squashed = next((kind for kind in facts.squashed if kind), None)
    else:
        squashed = None
    if score == "logit" and squashed is not None and target.uses_score:
        notes.append(
            f"score='logit' but the model's output comes out of a {squashed} that could "
            f"not be bypassed (inside a Lambda or a custom layer): the map explains the "
            f"{squashed} output, not the logit; end the model with a Dense/Activation/"
            "Softmax layer, or pass a model that returns logits"
        )
    if score == "probability" and scores.shape[-1] == 1 and isinstance(target, targets.Class):
        if head == "softmax" or squashed == "softmax":
            notes.append(
                "score='probability' on a softmax over one output unit: it is always 1, so "
                "every map is zero; use score='logit'"
            )
        elif head is None:
            notes.append(
                "the model has one output unit: score='probability' is its sigmoid (a softmax "
                "over one unit would be constant)"
            )
    return tuple(notes)


def gradient_notes(
    target: targets.Target,
    score: str,
    result: PassResult,
    default: str | None = None,
    reaching=None,
) -> tuple[str, ...]:
    """A line when the gradient is zero at every kept layer for some image: its map is empty
    because the score does not change with those layers there (a saturated probability, dead
    units, or a custom target that does not depend on the outputs). ``reaching``: the token
    layers whose patch tokens reach the outputs at all (:meth:`Engine.reaching_tokens`)."""
    if not result.gradients:
        return ()
    notes = token_notes(target, result, default, reaching)
    count = len(result.values)
    alive = np.zeros(count, bool)
    for gradients in result.gradients.values():
        alive |= gradients.reshape(count, -1).any(axis=1)
    covered = len(notes) == len(result.layers)  # every kept layer already explained
    if alive.all() or covered:
        return notes
    hint = (
        " (a probability of exactly 0 or 1 has no gradient: score='logit' explains it)"
        if score == "probability"
        else ""
    )
    return notes + (
        f"the gradient of {target.label} is zero at every recorded layer for "
        f"{int((~alive).sum())} of {count} image(s), so those maps are empty: the score does "
        f"not change with these layers there{hint}",
    )


def token_notes(
    target: targets.Target, result: PassResult, default: str | None = None, reaching=None
):
    """A line per token layer asked for (or the default layer, when every layer was
    recorded) whose patch tokens get no gradient at all, by the model's structure (not in
    ``reaching``): if the score reads only prefix tokens after that layer (a class token),
    its map is empty for every image. (A zero for this image only -- a saturated probability
    -- is left to the general note.)"""
    asked = result.layers if result.layers != result.candidates else (default,)
    notes = []
    for path in asked:
        layout = result.tokens.get(path)
        if reaching is not None and path in reaching:
            continue
        if layout is not None and path in result.gradients and not np.any(result.gradients[path]):
            notes.append(
                f"the patch tokens of {path} ({layers.describe_tokens(layout)}) get no gradient "
                f"from {target.label}, so its maps are empty: if the score reads only prefix "
                "tokens (a class token) after this layer, explain an earlier block"
            )
    return tuple(notes)
