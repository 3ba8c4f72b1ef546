"""Autoregressive tokenised actions: every action dim of every step becomes one of ``num_bins`` tokens,
decoded one at a time (order: step-major over Tp x Da) by a tiny causal transformer (nanoGPT) whose first
token is the projected observation cond. Sampling uses a KV cache, so each new token costs one position.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robolearn.policies.base import ActionHead

logger = logging.getLogger(__name__)


@dataclass
class TokenizedConfig:
    num_bins: int = 256
    """Tokens per action dim; bins cover [-1, 1] in normalised space."""
    binning: str = "uniform"
    """"uniform" bins, or "quantile" bins fitted from data (Policy.fit_data; else from the first batch)."""
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 64
    dropout: float = 0.0
    temperature: float = 1.0
    """Softmax temperature when sampling; 0 = greedy (argmax)."""
    label_sigma: float = 0.0
    """Train on soft targets (HL-Gauss, Farebrother et al. 2024): each target is a Gaussian of this std (in
    normalised action units) integrated over the bins, so neighbouring bins share credit; 0 = one-hot tokens."""

    def __post_init__(self):
        if self.num_bins < 2:
            raise ValueError(f"TokenizedConfig.num_bins={self.num_bins!r}: must be >= 2")
        if self.binning not in ("uniform", "quantile"):
            raise ValueError(
                f"TokenizedConfig.binning={self.binning!r}; valid options: 'uniform', 'quantile'"
            )
        if self.n_layer < 1 or self.n_head < 1:
            raise ValueError(f"TokenizedConfig.n_layer={self.n_layer!r}/n_head={self.n_head!r}: must be >= 1")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"TokenizedConfig.n_embd={self.n_embd!r} must be divisible by n_head={self.n_head!r}"
            )
        if not 0 <= self.dropout < 1:
            raise ValueError(f"TokenizedConfig.dropout={self.dropout!r}: must be in [0, 1)")
        if self.temperature < 0:
            raise ValueError(f"TokenizedConfig.temperature={self.temperature!r}: must be >= 0")
        if self.label_sigma < 0:
            raise ValueError(f"TokenizedConfig.label_sigma={self.label_sigma!r}: must be >= 0 (0 = one-hot)")


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg: TokenizedConfig):
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x: Tensor, cache: list | None = None) -> Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (t.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for t in (q, k, v))
        if cache is not None:  # cache = [k, v] of previous positions, updated in place
            if cache:
                k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)
            cache[:] = [k, v]
        # With a cache only the newest position is queried, and it may attend to everything before it.
        causal = cache is None or T > 1
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=causal, dropout_p=self.dropout if self.training else 0
        )
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


class Block(nn.Module):
    def __init__(self, cfg: TokenizedConfig):
        super().__init__()
        self.ln_1, self.ln_2 = nn.LayerNorm(cfg.n_embd), nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.mlp = nn.Sequential(
            nn.Linear(cfg.n_embd, 4 * cfg.n_embd),
            nn.GELU(),
            nn.Linear(4 * cfg.n_embd, cfg.n_embd),
            nn.Dropout(cfg.dropout),
        )

    def forward(self, x: Tensor, cache: list | None = None) -> Tensor:
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))


class TokenGPT(nn.Module):
    """Sequence [cond, tok_0, ..., tok_{L-2}] -> logits for tok_0 ... tok_{L-1}."""

    def __init__(self, cfg: TokenizedConfig, cond_dim: int, seq_len: int):
        super().__init__()
        self.seq_len = seq_len
        self.cond_proj = nn.Linear(cond_dim, cfg.n_embd)
        self.wte = nn.Embedding(cfg.num_bins, cfg.n_embd)
        self.wpe = nn.Embedding(seq_len, cfg.n_embd)  # position also tells which action dim is next
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.num_bins, bias=False)
        self.apply(self._init)

    @staticmethod
    def _init(m: nn.Module):
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(
        self, idx: Tensor, cond: Tensor, targets: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """idx (B, T) tokens so far (T < seq_len, may be 0), cond (B, C) -> logits (B, T+1, V), loss.
        targets: (B, T+1) token ids, or (B, T+1, V) target probabilities (soft labels)."""
        x = torch.cat([self.cond_proj(cond)[:, None], self.wte(idx)], 1)
        x = x + self.wpe.weight[: x.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        logits = self.lm_head(self.ln_f(x))
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten(0, 1))
        return logits, loss

    @torch.no_grad()
    def generate(self, cond: Tensor, temperature: float = 1.0, generator=None) -> Tensor:
        """cond (B, C) -> tokens (B, seq_len), one position per transformer call thanks to the KV cache."""
        B = cond.shape[0]
        caches: list[list] = [[] for _ in self.blocks]
        x = self.cond_proj(cond)[:, None] + self.wpe.weight[:1]
        out = torch.empty(B, self.seq_len, dtype=torch.long, device=cond.device)
        for i in range(self.seq_len):
            h = x
            for blk, c in zip(self.blocks, caches):
                h = blk(h, c)
            logits = self.lm_head(self.ln_f(h[:, -1]))
            if temperature == 0:
                tok = logits.argmax(-1)
            else:
                tok = torch.multinomial(
                    torch.softmax(logits / temperature, -1), 1, generator=generator
                ).squeeze(-1)
            out[:, i] = tok
            if i + 1 < self.seq_len:
                x = (self.wte(tok) + self.wpe.weight[i + 1])[:, None]
        return out


class TokenizedHead(ActionHead):
    def __init__(self, cfg: TokenizedConfig, cond_dim: int, Tp: int, Da: int):
        super().__init__(cfg, cond_dim, Tp, Da)
        n = cfg.num_bins
        # Bin centres / boundaries per action dim are buffers so quantile bins travel in the checkpoint.
        centers = torch.linspace(-1, 1, n).expand(Da, n).clone()
        self.register_buffer("bin_centers", centers)
        self.register_buffer("bin_edges", (centers[:, 1:] + centers[:, :-1]) / 2)
        self.register_buffer("fitted", torch.tensor(cfg.binning == "uniform"))
        self.gpt = TokenGPT(cfg, cond_dim, Tp * Da)

    @torch.no_grad()
    def fit_data(self, action: Tensor) -> None:
        if self.cfg.binning != "quantile":
            return
        a = action.reshape(-1, self.Da).clamp(-1, 1).float()
        q = torch.linspace(0, 1, self.cfg.num_bins, device=a.device)
        centers = torch.quantile(a, q, dim=0).T.contiguous()  # (Da, n)
        # Duplicate quantiles (discrete data) would make empty bins; nudge them to stay strictly increasing.
        centers = centers + torch.arange(self.cfg.num_bins, device=a.device) * 1e-6
        self.bin_centers.copy_(centers)
        self.bin_edges.copy_((centers[:, 1:] + centers[:, :-1]) / 2)
        self.fitted.fill_(True)

    def tokenize(self, action: Tensor) -> Tensor:
        """(B, Tp, Da) -> (B, Tp*Da) long."""
        B = action.shape[0]
        x = action.clamp(-1, 1).permute(2, 0, 1).reshape(self.Da, -1).contiguous()  # (Da, B*Tp)
        tok = torch.searchsorted(self.bin_edges, x)
        return tok.view(self.Da, B, self.Tp).permute(1, 2, 0).reshape(B, -1)

    def detokenize(self, tok: Tensor) -> Tensor:
        """(B, Tp*Da) -> (B, Tp, Da) bin centres."""
        tok = tok.view(-1, self.Tp, self.Da)
        return self.bin_centers[torch.arange(self.Da, device=tok.device), tok]

    def loss(self, cond: Tensor, action: Tensor) -> tuple[Tensor, dict[str, float]]:
        if not bool(self.fitted):
            # Fallback: quantiles of the first batch. Prefer Policy.fit_data(all dataset actions) before training.
            logger.warning(
                "tokenized head: quantile bins not fitted; fitting them on the first training batch"
            )
            self.fit_data(action)
        tok = self.tokenize(action)
        targets = tok if self.cfg.label_sigma == 0 else self.soft_targets(action)
        _, loss = self.gpt(tok[:, :-1], cond, targets=targets)
        return loss, {"loss/ce": loss.item()}

    def soft_targets(self, action: Tensor) -> Tensor:
        """(B, Tp, Da) -> (B, Tp*Da, num_bins): N(a, label_sigma^2) integrated over each token's bin (the
        outer bins take the tails), in tokenize's step-major order."""
        B = action.shape[0]
        y = action.clamp(-1, 1).reshape(B, self.Tp * self.Da, 1)
        edges = self.bin_edges[torch.arange(self.Tp * self.Da, device=y.device) % self.Da]  # (L, n-1)
        cdf = torch.special.ndtr((edges - y) / self.cfg.label_sigma)  # (B, L, n-1)
        cdf = F.pad(cdf, (1, 0), value=0.0)
        return torch.diff(F.pad(cdf, (0, 1), value=1.0), dim=-1)

    def sample(self, cond: Tensor, generator=None) -> Tensor:
        return self.detokenize(self.gpt.generate(cond, self.cfg.temperature, generator))
