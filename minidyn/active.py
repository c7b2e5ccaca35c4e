"""The active set of a batch attack: the rows still attacked, worked on as a smaller batch.

PGD with Algorithm 1's FOSC stop, and APGD with `stop_when_misclassified`, stop examples at
different steps. The paper writes this as a masked full-batch update, x + V * alpha * sign(g)
with V = 0 for the stopped rows; here the rows that stop are written to the outputs and the
attack goes on with the smaller batch of the rows that go on, so a stopped example costs no
more gradient evaluations. Attacks run the model in eval mode and the backends' gradients are
per example, so the result is exactly the masked one.

Two moves, in this order, whenever some rows stop:

    active.write(out, x_adv=x, steps=k)            every active row's outputs, in batch order
    x, y, state = active.keep(go_on, x, y, state)  only the rows `go_on` from here on

Every active row is written, not only the rows that stop (which would need one more gather);
the rows that go on overwrite theirs when they stop, or in the last write after the loop.

While every row is active nothing is gathered or scattered: `index` is None, and a write hands
the arrays themselves to the outputs, without a copy. That first write (a write always comes
before the first `keep`) so fills every output row, and later writes change those arrays in
place; an attack therefore writes a per-row array only just before `keep` replaces it, or
after its loop, and never changes its per-row arrays in place.
"""
from __future__ import annotations

from dataclasses import fields, is_dataclass, replace
from typing import Any

from minidyn.backend import Array, Backend


class ActiveSet:
    """Which of the n rows of a batch are still attacked (A of them), in the batch's order."""

    def __init__(self, backend: Backend, n: int):
        self.backend = backend
        self.n = n
        self.index: Array | None = None  # (A,) positions in the batch; None while all n are active

    def __len__(self) -> int:
        return self.n if self.index is None else int(self.index.shape[0])

    def write(self, out: Any, **values: Array | int) -> None:
        """Set the active rows of the outputs: out.<name>[index] = value for each keyword.

        out: a dataclass whose fields named here are (n, ...) arrays (None before the first
        write). value: an (A, ...) array of the active rows, or a Python int for all of them.
        """
        backend = self.backend
        for name, value in values.items():
            if self.index is None:  # every row: the array itself, no scatter
                if isinstance(value, int):
                    value = backend.full((self.n,), value, dtype="int")
                setattr(out, name, value)
            elif len(self):
                backend.put(getattr(out, name), self.index, value)

    def keep(self, rows: Array, *per_row: Any) -> tuple:
        """Go on with the active rows at positions `rows` (1-D integer, into the active set).

        per_row: arrays (A, ...) or dataclasses of them; returned narrowed to those rows, in order.
        """
        take = self.backend.take
        self.index = rows if self.index is None else take(self.index, rows)
        return tuple(replace(a, **{f.name: take(getattr(a, f.name), rows) for f in fields(a)})
                     if is_dataclass(a) else take(a, rows) for a in per_row)

    def host_index(self) -> Any:
        """The active positions as a numpy index (a slice while every row is active)."""
        return slice(None) if self.index is None else self.backend.to_numpy(self.index)
