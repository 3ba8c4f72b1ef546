import os

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

# two cores: keep each test process to one intra-op thread unless a test asks otherwise
torch.set_num_threads(1)


def make_episode(T=20, obs_dim=4, act_dim=3, seed=0, source="scripted", success=True, image=False):
    from robolearn.data.store import Episode

    rng = np.random.default_rng(seed)
    obs = {"pos": rng.normal(size=(T + 1, obs_dim)).astype(np.float32),
           "vel": rng.normal(size=(T + 1, 2)).astype(np.float32)}
    if image:
        obs["image_front"] = rng.integers(0, 255, size=(T + 1, 16, 16, 3), dtype=np.uint8)
    return Episode(
        obs={k: v[:-1] for k, v in obs.items()},
        next_obs={k: v[1:] for k, v in obs.items()},
        actions=rng.uniform(-1, 1, size=(T, act_dim)).astype(np.float32),
        rewards=rng.normal(size=T).astype(np.float32),
        dones=np.r_[np.zeros(T - 1), 1].astype(np.uint8),
        states=rng.normal(size=(T, 7)),
        interventions=rng.random(T) < 0.3,
        policy_actions=rng.uniform(-1, 1, size=(T, act_dim)).astype(np.float32),
        source=source,
        success=success,
        seed=seed,
    )


def write_store(path, n=5, **kw):
    from gymnasium import spaces

    from robolearn.data.store import EpisodeWriter

    eps = [make_episode(T=10 + 3 * i, seed=i, **kw) for i in range(n)]
    obs_space = spaces.Dict({k: spaces.Box(-np.inf, np.inf, v.shape[1:], v.dtype) for k, v in eps[0].obs.items()})
    w = EpisodeWriter(path, "robolearn/Test-v0", {"obs_mode": "state"}, obs_space,
                      spaces.Box(-1, 1, (eps[0].actions.shape[1],), np.float32))
    for e in eps:
        w.append(e)
    return eps


@pytest.fixture
def store(tmp_path):
    p = tmp_path / "demos.hdf5"
    eps = write_store(p, n=10)
    return p, eps
