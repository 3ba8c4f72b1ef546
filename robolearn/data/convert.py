"""Importing other formats into the episode store. Minari datasets come from minari's local storage."""

from __future__ import annotations

import numpy as np

from robolearn.data.store import Episode, EpisodeWriter, StoreError


def _split(obs, T: int):
    """Minari observations have T+1 entries: -> (obs[:T], obs[1:]) as dicts of arrays."""
    if isinstance(obs, dict):
        flat = {}
        for k, v in obs.items():
            if isinstance(v, dict):
                for kk, vv in v.items():
                    flat[f"{k}/{kk}".replace("/", "_")] = np.asarray(vv)
            else:
                flat[k] = np.asarray(v)
    else:
        flat = {"state": np.asarray(obs)}
    o = {k: (v.astype(np.float32) if v.dtype == np.float64 else v)[:T] for k, v in flat.items()}
    n = {k: (v.astype(np.float32) if v.dtype == np.float64 else v)[1 : T + 1] for k, v in flat.items()}
    return o, n


def convert_minari(dataset_id: str, out: str, source: str = "policy", overwrite: bool = False) -> dict:
    try:
        import minari
    except ImportError:
        raise StoreError("minari is not installed. Fix: pip install 'robolearn[minari]'") from None
    try:
        ds = minari.load_dataset(dataset_id)
    except Exception as e:  # noqa: BLE001 - minari raises several kinds for a missing dataset
        local = list(minari.list_local_datasets().keys())
        raise StoreError(
            f"Minari dataset {dataset_id!r} is not in local storage ({type(e).__name__}: {str(e)[:100]}); "
            f"local datasets: {local}. Fix: create or copy it into minari's storage first "
            "(robolearn never downloads at run time)"
        ) from None
    env_id = ds.spec.env_spec.id if ds.spec.env_spec is not None else dataset_id
    writer = None
    n, steps = 0, 0
    for ep in ds.iterate_episodes():
        actions = np.asarray(ep.actions, np.float32).reshape(len(ep.actions), -1)
        T = len(actions)
        obs, next_obs = _split(ep.observations, T)
        term = np.asarray(ep.terminations, bool)
        dones = term.astype(np.uint8)
        infos = ep.infos if isinstance(ep.infos, dict) else {}
        success = bool(np.asarray(infos.get("success", infos.get("is_success", term)))[-1:].any())
        e = Episode(obs=obs, next_obs=next_obs, actions=actions, rewards=np.asarray(ep.rewards, np.float32),
                    dones=dones, source=source, success=success, seed=int(getattr(ep, "id", n)),
                    attrs={"origin": f"minari:{dataset_id}"})
        if writer is None:
            from gymnasium import spaces

            obs_space = spaces.Dict({k: spaces.Box(-np.inf, np.inf, v.shape[1:], v.dtype) for k, v in obs.items()})
            act_space = spaces.Box(-np.inf, np.inf, actions.shape[1:], np.float32)
            writer = EpisodeWriter(out, env_id, {}, obs_space, act_space, overwrite=overwrite)
        writer.append(e)
        n += 1
        steps += T
    if writer is None:
        raise StoreError(f"Minari dataset {dataset_id!r} holds no episodes; nothing written to {out}")
    writer.close()  # merges the journal; overwrite=True: replaces the old store now that the conversion is complete
    return {"file": out, "env": env_id, "episodes": n, "steps": steps}
