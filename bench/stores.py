"""Episode-store helpers shared by the bench scripts (run as `python bench/<script>.py`, so `import stores`)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from robolearn.data.store import Episode, EpisodeWriter, iter_episodes, read_info

# the standard demo sets (datasets/<name>.hdf5, bash datasets/make_datasets.sh) and the task each is recorded in
TASK_ENV = {
    "lift": "robolearn/Lift-v0",
    "pusht": "robolearn/PushT-v0",
    "pusht1": "robolearn/PushT-v1",
    "reacharound": "robolearn/ReachAround-v0",
    "peginsert": "robolearn/PegInsert-v0",
}


def first_episodes(src: Path, n: int, dst: Path) -> int:
    """The first n episodes of src as a new store dst; returns their steps (= expert labels).

    Written to a temporary file that replaces dst only when complete, so an interrupted bench never leaves
    a partial subset behind; an existing dst (from an earlier, resumed run) is kept and counted."""
    if dst.exists():
        return sum(read_info(dst).lengths.values())
    info = read_info(src)
    tmp = dst.with_suffix(".tmp.hdf5")
    tmp.unlink(missing_ok=True)
    w = EpisodeWriter(tmp, info.env_id, info.env_kwargs)
    steps = 0
    for _, e in iter_episodes(src, info.demos[:n]):
        w.append(Episode.from_stored(e))
        steps += len(e["actions"])
    w.close()
    tmp.replace(dst)
    return steps


def key_values(items: Iterable[str], error: Callable[[str], str]) -> dict:
    """["k=v", ...] as {k: v} with each value parsed as YAML (true, 0.5, rollout); an item without "=" exits with
    error(item)."""
    import yaml

    out = {}
    for item in items:
        k, eq, v = item.partition("=")
        if not eq:
            raise SystemExit(error(item))
        out[k] = yaml.safe_load(v)
    return out
