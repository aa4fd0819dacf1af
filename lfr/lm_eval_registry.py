"""lm-eval's task names, so that lfr/grid.py checks `eval.tasks` before any job runs, not after
the training jobs. Imports lm-eval (and its torch) only when a name is not one of ours."""

from __future__ import annotations

import difflib
import json
import logging
import os
from functools import cache
from pathlib import Path

from lfr.config import config_hash

LOCAL_TASKS = ("lfr_ppl", "lfr_cloze", "lfr_mc")
"""Built by the eval-tasks stage, so not in lm-eval's registry."""


def unknown_task(name: str) -> str | None:
    """Why `name` is not a task we can run (None: it is one): not ours, and not an lm-eval task,
    group or tag (with the closest names), or lm-eval is not importable to say."""
    if name in LOCAL_TASKS:
        return None  # the offline demo needs no lm-eval registry
    try:
        known = lm_eval_tasks()
    except ImportError as err:  # not skipped: the names would fail only after training
        return f"cannot check these task names: lm-eval is not importable ({err})"
    if name in known:
        return None
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {' or '.join(map(repr, close))}?" if close else "see `lm-eval ls tasks`"
    return f"{name!r} is not an lm-eval task, group or tag; {hint}"


def index_file(version: str, tasks_dir: Path) -> Path:
    """Where the task list of one lm-eval install is cached: keyed by its version, its tasks folder
    and the names in that folder. Not by the folder's mtime: Python's first import of lm_eval.tasks
    adds its __pycache__ there, and the next process would index the tasks again."""
    names = sorted(p.name for p in tasks_dir.iterdir() if p.name != "__pycache__")
    key = config_hash([version, str(tasks_dir), names])
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "lfr" / f"lm_eval_tasks-{key}.json"


@cache
def lm_eval_tasks() -> frozenset[str]:
    """Every task, group and tag name of the installed lm-eval. Indexing its YAML files takes
    seconds, so the list is cached on disk per lm-eval install (index_file)."""
    import lm_eval

    cached = index_file(lm_eval.__version__, Path(lm_eval.__file__).parent / "tasks")
    try:
        return frozenset(json.loads(cached.read_text()))
    except (OSError, ValueError):
        pass
    from lm_eval.tasks import TaskManager

    # a warning, so that the pause is explained even where logging is not configured (Snakefile)
    logging.getLogger(__name__).warning("indexing lm-eval's tasks to check eval.tasks (once; cached "
                                        "in %s)", cached)
    names = sorted(TaskManager().all_tasks)
    try:  # atomic, for parallel validations; an unwritable cache only costs the next run time
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(names))
        tmp.replace(cached)
    except OSError:
        pass
    return frozenset(names)
