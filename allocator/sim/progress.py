"""Progress of a simulation, reported through a callback (the library writes nothing itself).

``simulate``, ``simulate_mixed``, ``run_replay`` and ``run_mixed`` take
``progress: Callable[[ProgressEvent], None] | None``; the command line draws a bar from it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Progress", "ProgressEvent"]


@dataclass(frozen=True)
class ProgressEvent:
    """``done`` of ``total`` steps are finished; ``unit`` names the steps (``runs``, ``pods``,
    ``rounds``) and ``item`` the one just finished (for a label)."""

    done: int
    total: int
    unit: str
    item: str = ""


#: The callback's type.
Progress = Callable[[ProgressEvent], None]
