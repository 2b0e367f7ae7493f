"""One declaration for a parameter list that two public functions share.

``explain`` and ``iter_explain`` take the same arguments, and so do ``deletion`` and
``insertion`` (but for one default): the list is written once, on the first function, and
the second takes it with :func:`same_parameters`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

__all__ = ["same_parameters"]


def same_parameters(source: Callable, **defaults) -> Callable[[Callable], Callable]:
    """Give the decorated ``function(*args, **kwargs)`` the parameters of ``source``.

    The decorated function's signature (what ``help()``, IDEs and :func:`inspect.signature`
    show) is that of ``source``, with the function's own return annotation and ``defaults``
    replacing some of the defaults. A call is bound to that signature first: a wrong
    argument raises a ``TypeError`` naming the function, before it runs; otherwise the
    function gets every parameter, defaults filled in, positionally in ``source``'s order
    (keyword-only parameters and ``**options`` as keywords).

    Args:
        source: the function whose parameters are shared.
        **defaults: new defaults, by parameter name.

    Returns:
        The decorator.

    Raises:
        ValueError: for a default naming no parameter of ``source``.
    """
    shared = inspect.signature(source)
    unknown = sorted(set(defaults) - set(shared.parameters))
    if unknown:
        raise ValueError(f"{source.__name__} has no parameter {', '.join(unknown)}")
    parameters = [
        parameter.replace(default=defaults[name]) if name in defaults else parameter
        for name, parameter in shared.parameters.items()
    ]

    def decorate(function: Callable) -> Callable:
        signature = shared.replace(
            parameters=parameters,
            return_annotation=inspect.signature(function).return_annotation,
        )

        @functools.wraps(function)
        def bound(*args, **kwargs):
            try:
                call = signature.bind(*args, **kwargs)
            except TypeError as error:
                raise TypeError(f"{function.__name__}(): {error}") from None
            call.apply_defaults()
            return function(*call.args, **call.kwargs)

        bound.__signature__ = signature
        return bound

    return decorate
