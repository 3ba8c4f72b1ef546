"""Policies: normaliser -> observation encoder -> action head (one registry, heads compose with encoders).

Adding a head touches its module, one line in HEADS, its config dataclass and one test parameter.
"""

from robolearn.policies.base import ActionHead
from robolearn.policies.diffusion import DiffusionConfig, DiffusionHead
from robolearn.policies.flow import FlowConfig, FlowHead
from robolearn.policies.gmm import GMMConfig, GMMHead
from robolearn.policies.mse import MSEConfig, MSEHead
from robolearn.policies.tokenized import TokenizedConfig, TokenizedHead

HEADS: dict[str, tuple[type, type[ActionHead]]] = {
    "mse": (MSEConfig, MSEHead),
    "gmm": (GMMConfig, GMMHead),
    "tokenized": (TokenizedConfig, TokenizedHead),
    "diffusion": (DiffusionConfig, DiffusionHead),
    "flow": (FlowConfig, FlowHead),
}


def policy_horizon(head: str) -> tuple[int, int]:
    """The (Tp, Ta) a head trains and runs with unless told otherwise: its config's DEFAULT_HORIZON
    (GMM: (1, 1), a mixture per action step as robomimic's), else the chunk default (8, 4)."""
    return tuple(getattr(HEADS[head][0], "DEFAULT_HORIZON", (8, 4)))


from robolearn.policies.checkpoint import build_policy, load_policy, policy_state  # noqa: E402
from robolearn.policies.chunking import ActionChunker, ObsHistory  # noqa: E402
from robolearn.policies.encoders import EncoderConfig  # noqa: E402
from robolearn.policies.policy import Policy, PolicyConfig  # noqa: E402

__all__ = [
    "HEADS",
    "ActionHead",
    "Policy",
    "PolicyConfig",
    "EncoderConfig",
    "MSEConfig",
    "GMMConfig",
    "TokenizedConfig",
    "DiffusionConfig",
    "FlowConfig",
    "policy_state",
    "build_policy",
    "load_policy",
    "ActionChunker",
    "ObsHistory",
    "policy_horizon",
]
