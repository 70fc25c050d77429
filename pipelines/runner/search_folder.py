"""The search folder: one folder that every worker of a search shares, each trial's run folder inside it.

The first worker marks it (`.hubtune-search`: the study, its storage, the metric and the recipe searched); a
worker that finds the mark joins the search when its own setup is the same, and is refused when it is another
search. A folder without the mark is not hubtune's search, and is never written into. `hubtune search --report DIR`
finds the study through the mark.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pipelines.errors import HubtuneError, require_path
from pipelines.runs.guard import check_usable

SEARCH_MARKER = ".hubtune-search"
# What must agree for a worker to join: the same study in the same storage, scored the same way, of one recipe.
JOINED_ON = ("study", "storage", "metric", "direction", "recipe")


def _read(out: Path) -> dict[str, Any] | None:
    try:
        return json.loads((out / SEARCH_MARKER).read_text())
    except FileNotFoundError:
        return None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise HubtuneError(
            f"search folder '{out}' has an unreadable {SEARCH_MARKER} ({error}); give another --out"
        ) from error


def join_search_folder(out: Path, setup: dict[str, Any]) -> bool:
    """Make `out` this search's folder, or join it when another worker of the same search made it; returns whether
    it was joined."""
    check_usable(out, "--out")
    marker = _read(out) if out.is_dir() else None
    if marker is None:
        if out.exists() and any(out.iterdir()):
            raise HubtuneError(
                f"search folder '{out}' already exists and holds no hubtune search ({SEARCH_MARKER}); remove it or "
                "give another --out"
            )
        out.mkdir(parents=True, exist_ok=True)
        try:
            # O_EXCL: of two workers started together, one writes the mark and the other reads it.
            handle = os.open(out / SEARCH_MARKER, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileExistsError:
            marker = _read(out)
        else:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(json.dumps(setup, indent=2, sort_keys=True) + "\n")
            return False
    assert marker is not None
    differing = [key for key in JOINED_ON if marker.get(key) != setup.get(key)]
    if differing:
        raise HubtuneError(
            f"search folder '{out}' holds another search (its {', '.join(differing)} differ from this one's); "
            "give another --out, or the same recipe, overrides, --metric and --storage to join it"
        )
    return True


def read_search_folder(out: Path) -> dict[str, Any]:
    require_path(out, "folder", "search folder")
    marker = _read(out)
    if marker is None:
        raise HubtuneError(f"'{out}' is not a hubtune search folder: it has no {SEARCH_MARKER}")
    return marker
