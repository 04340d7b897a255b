"""The one registry of the report's figures.

Adding a figure is a one-place change: write its draw function in analysis/figures.py (or
analysis/figures_turns.py for a figure drawn once per DRAM size) and put `@figure(...)` on it:

    @figure(name="why", cost=23, section="why", order=40)
    def why(res: Results, out: Path) -> FigureFile: ...

    @figure(name="per_turn", cost=9, section="per-turn", order=20, per_dram=True)
    def per_turn(res: Results, out: Path, dram: int | None = None) -> list[FigureFile]: ...

Everything else is derived from the registration: the drawing tasks and their order
(`figures._tasks`), the workers' schedule (most costly first), where the figure stands in
report.html (its section, before or after the section's table, ordered by `order`) and its
place in index.json. (A figure in a new module also needs that module imported by
analysis/figures.py, which is what registers it; docs/analysis.md describes each figure.)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from analysis.plotkit import FigureFile

if TYPE_CHECKING:
    from analysis.pipeline import Results

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Figure:
    """A registered figure.

    name: the figure's file name (per-DRAM figures: `<name>_dram<D>`), unique.
    draw: (res, out) -> FigureFile, or with per_dram (res, out, dram) -> list[FigureFile]
        (an empty list when the sweep has nothing to draw).
    cost: rough relative drawing time of one task (one DRAM size when per_dram); the
        workers start the costly ones first so that they end together. Only the order counts.
    section: id of the report.html section that shows it (report.html raises on one it
        lacks).
    order: position in the report and in index.json, over all figures (ascending); within a
        section, figures stand in this order.
    after_table: placed after the section's table instead of before it.
    per_dram: drawn once per DRAM size of the sweeps, one task each.
    """

    name: str
    draw: Callable[..., Any]
    cost: float
    section: str
    order: int
    after_table: bool = False
    per_dram: bool = False

    def run(self, res: Results, out: Path, dram: int | None = None) -> list[FigureFile]:
        """Draws the figure (the one DRAM size `dram` when per_dram); every file it returns
        is stamped with this figure's name."""
        drawn = list(self.draw(res, out, dram)) if self.per_dram else [self.draw(res, out)]
        return [replace(f, figure=self.name) for f in drawn]


class Registry:
    def __init__(self) -> None:
        self._by_name: dict[str, Figure] = {}

    def add(self, fig: Figure) -> Figure:
        if fig.name in self._by_name:
            raise ValueError(f"figure {fig.name!r} is registered twice "
                             f"({self._by_name[fig.name].draw.__qualname__} and "
                             f"{fig.draw.__qualname__})")
        if fig.cost <= 0:
            raise ValueError(f"figure {fig.name!r}: cost must be positive, not {fig.cost}")
        self._by_name[fig.name] = fig
        return fig

    def register(self, *, name: str, cost: float, section: str, order: int,
                 after_table: bool = False, per_dram: bool = False) -> Callable[[F], F]:
        """Decorator: registers the function as the figure `name` (see Figure)."""
        def deco(draw: F) -> F:
            self.add(Figure(name, draw, cost, section, order, after_table, per_dram))
            return draw
        return deco

    def __getitem__(self, name: str) -> Figure:
        return self._by_name[name]

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __len__(self) -> int:
        return len(self._by_name)

    def __iter__(self) -> Iterator[Figure]:
        """In report order (order, then name)."""
        return iter(sorted(self._by_name.values(), key=lambda f: (f.order, f.name)))


FIGURES = Registry()
figure = FIGURES.register
