"""One declaration for a parameter list that two public functions share.

``explain`` and ``iter_explain`` take the same arguments, and so do ``deletion`` and
``insertion`` (but for one default): the list is written once, on the first function, and
the second takes it with :func:`same_parameters`. A one-call wrapper that runs one function
then a method of its result (``grad_cam`` is ``capture(...).cam(...)``) takes both lists with
:func:`joined_parameters`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

__all__ = ["joined_parameters", "same_parameters"]


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
        return _bound_to(function, parameters, lambda call: (call.args, call.kwargs))

    return decorate


def _bound_to(function: Callable, parameters: list, arrange: Callable) -> Callable:
    """``function`` with the signature of ``parameters`` (and its own return annotation): a
    call is bound to it, defaults filled in, and ``arrange(bound_arguments)`` gives the
    ``(args, kwargs)`` ``function`` is called with (directly: a warning's ``stacklevel``
    counts one frame for the wrapper); a wrong argument raises a ``TypeError`` naming
    ``function`` before anything runs."""
    signature = inspect.Signature(
        parameters, return_annotation=inspect.signature(function).return_annotation
    )

    @functools.wraps(function)
    def bound(*args, **kwargs):
        try:
            call = signature.bind(*args, **kwargs)
        except TypeError as error:
            raise TypeError(f"{function.__name__}(): {error}") from None
        call.apply_defaults()
        args, kwargs = arrange(call)
        return function(*args, **kwargs)

    bound.__signature__ = signature
    return bound


def joined_parameters(
    first: Callable, count: int, then: Callable, tail: tuple[str, ...] = ()
) -> Callable[[Callable], Callable]:
    """Give the decorated one-call wrapper the parameters of ``first`` and then of ``then``.

    The signature is ``first``'s first ``count`` parameters, ``then``'s (without ``self``;
    its ``**options`` last), and ``first``'s parameters named in ``tail``, before the
    ``**options``. A call is bound to it (a wrong argument raises a ``TypeError`` naming the
    wrapper, before it runs); the wrapper gets every parameter by keyword, defaults filled in,
    what ``**options`` took among them.

    Args:
        first: the function that runs first (``capture``).
        count: how many of its leading parameters the wrapper takes in place.
        then: the method called on its result (``Capture.cam``).
        tail: parameters of ``first`` taken after ``then``'s, by name.

    Returns:
        The decorator.

    Raises:
        ValueError: for a ``tail`` name that is not a parameter of ``first``.
    """
    lead = list(inspect.signature(first).parameters.values())
    named = {parameter.name: parameter for parameter in lead}
    unknown = sorted(set(tail) - set(named))
    if unknown:
        raise ValueError(f"{first.__name__} has no parameter {', '.join(unknown)}")
    follow = list(inspect.signature(then).parameters.values())
    follow = [parameter for parameter in follow if parameter.name != "self"]
    rest = [p for p in follow if p.kind is not inspect.Parameter.VAR_KEYWORD]
    var = [p for p in follow if p.kind is inspect.Parameter.VAR_KEYWORD]
    parameters = [*lead[:count], *rest, *(named[name] for name in tail), *var]

    def by_keyword(call):
        given = dict(call.arguments)
        for parameter in var:
            given.update(given.pop(parameter.name, {}))
        return (), given

    def decorate(function: Callable) -> Callable:
        return _bound_to(function, parameters, by_keyword)

    return decorate
