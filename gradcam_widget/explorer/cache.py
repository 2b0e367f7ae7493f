"""A least-recently-used cache bounded by the bytes of what it holds.

Counting entries says nothing about memory: one VGG16 capture with every layer is about
115 MB, one with a single layer well under 1 MB. :class:`ByteLRU` counts bytes (each value's
size is asked again whenever the cache is trimmed, so a value that grows, such as a capture
whose other layers were filled in, is counted at its new size) and drops the least recently
used entries until the total fits the budget. The most recent entry always stays: it is the
one on screen.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Hashable


def nbytes_of(value) -> int:
    """``value.nbytes`` (numpy arrays, captures, results)."""
    return int(value.nbytes)


class ByteLRU:
    """A mapping that keeps at most ``budget`` bytes (and at most ``max_items`` entries).

    Args:
        budget: bytes the values may take together (the newest entry is kept even alone
            above it).
        max_items: an optional bound on the number of entries as well.
        size_of: ``size_of(value) -> bytes`` (default: ``value.nbytes``).
        on_evict: called as ``on_evict(key, value)`` for each entry the budget pushes out.
    """

    def __init__(
        self,
        budget: int,
        max_items: int | None = None,
        size_of: Callable[[object], int] = nbytes_of,
        on_evict: Callable[[Hashable, object], None] | None = None,
    ):
        self.budget = int(budget)
        self.max_items = max_items
        self._size_of = size_of
        self._on_evict = on_evict
        self._entries: OrderedDict[Hashable, object] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key) -> bool:
        return key in self._entries

    def __iter__(self):
        """Keys, least recently used first (a snapshot: the cache may change meanwhile)."""
        return iter(list(self._entries))

    @property
    def nbytes(self) -> int:
        """Bytes the cached values take now."""
        return sum(self._size_of(value) for value in self._entries.values())

    def get(self, key, default=None):
        """The value for ``key`` (now the most recently used), or ``default``."""
        if key not in self._entries:
            return default
        self._entries.move_to_end(key)
        return self._entries[key]

    def put(self, key, value) -> None:
        """Store ``value`` as the most recently used entry, then :meth:`trim`."""
        self._entries[key] = value
        self._entries.move_to_end(key)
        self.trim()

    def trim(self) -> None:
        """Drop least recently used entries until the budget and the count bound hold."""
        sizes = {key: self._size_of(value) for key, value in self._entries.items()}
        total = sum(sizes.values())
        while len(self._entries) > 1 and (
            total > self.budget
            or (self.max_items is not None and len(self._entries) > self.max_items)
        ):
            key, value = self._entries.popitem(last=False)
            total -= sizes[key]
            if self._on_evict is not None:
                self._on_evict(key, value)

    def discard(self, predicate: Callable[[Hashable], bool]) -> None:
        """Remove every entry whose key satisfies ``predicate`` (no ``on_evict`` call)."""
        for key in [key for key in self._entries if predicate(key)]:
            del self._entries[key]

    def clear(self) -> None:
        """Remove everything (no ``on_evict`` calls)."""
        self._entries.clear()
