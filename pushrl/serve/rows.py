"""The parameter rows of the durable log's statements (:mod:`pushrl.serve.store`): a
``Statement`` is ``(sql, params)`` where ``params`` is one row, a :class:`Many` of rows or a
:class:`Columns` (rows given column-wise)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import repeat
from typing import Any


class Many(list):  # type: ignore[type-arg]
    """The parameter rows of one SQL statement run for each row: ``(sql, Many(rows))`` is
    ``len(rows)`` statements in one (a batch builds its rows column-wise, e.g.
    ``Many(zip(ids, seqs, ...))``, and the writer hands them to one ``executemany``)."""


class Same:
    """A column of :class:`Columns` whose every row holds ``value``."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


class Chunks:
    """A column of :class:`Columns`: row ``i`` is ``data[i * width:(i + 1) * width]`` (e.g.
    each row's feature BLOB, cut from one array's bytes only when written)."""

    __slots__ = ("data", "width")

    def __init__(self, data: bytes, width: int) -> None:
        self.data, self.width = data, width


#: A column of :class:`Columns`: a list or range of ``n`` values, a :class:`Same` or a
#: :class:`Chunks`.
Column = list[Any] | range | Same | Chunks


class Columns:
    """The ``n`` parameter rows of one SQL statement given column-wise: ``(sql, Columns(n,
    ids, seqs, ...))`` is what ``(sql, Many(zip(ids, seqs, ...)))`` is, but the row tuples
    are made only when written (by the writer thread, or never: a bulk record stores the
    columns, serve/bulk_sends.py)."""

    __slots__ = ("cols", "n")

    def __init__(self, n: int, *cols: Column) -> None:
        self.n, self.cols = n, cols

    def __len__(self) -> int:
        return self.n

    def rows(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[Any, ...]]:
        """Rows ``[start, stop)`` as tuples."""
        stop = self.n if stop is None else min(stop, self.n)
        its: list[Any] = []
        for c in self.cols:
            if type(c) is Same:
                its.append(repeat(c.value, max(stop - start, 0)))
            elif type(c) is Chunks:
                d, w = c.data, c.width
                its.append([d[i:i + w] for i in range(start * w, stop * w, w)])
            else:
                its.append(c[start:stop])  # type: ignore[index]
        return zip(*its, strict=True)


Statement = tuple[str, "Sequence[Any] | Columns"]
