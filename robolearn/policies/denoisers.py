"""Denoiser networks shared by the diffusion and flow heads: eps/velocity = f(x_t, t, cond).

Both networks split their work in two so few-step samplers stay cheap at batch 1:

* ``condition(t, cond) -> list[Tensor]`` — everything that depends only on (t, obs cond): the timestep
  embedding and every FiLM scale/bias (U-Net) or the first-layer cond term (MLP). Samplers call it ONCE for
  all inference steps in one batched call (N = steps * B, step-major), then slice per step.
* ``run(x, c) -> Tensor`` — the part that touches x (B, Tp, Da).

The U-Net is diffusion_policy's ConditionalUnet1D (FiLM residual blocks, GroupNorm, Mish, kernel 5,
down_dims). At batch 1 a forward pass costs reading every weight once, so a ~65M-param U-Net is
memory-bandwidth bound (~260 MB per step in float32). So at batch 1 without autograd, big or bfloat16 Conv1d
layers run as ONE matmul over unfolded windows (the sequence is tiny, Tp <= 16) against a oneDNN-prepacked
copy of the weight, which streams it near memory bandwidth (DDIM-10 in ~86 ms on 2 cores, vs ~235 ms for
plain MKL GEMMs and ~500 ms for batch-1 conv kernels); training, batched act() and small nets use the native
kernels. ``inference_dtype="bfloat16"`` samples with a cached bfloat16 copy of the denoiser to halve the bytes
(CPUs with AVX512-BF16/AMX run bf16 GEMMs natively).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from robolearn.policies.layers import ACTIVATIONS, Mish, check_activation, mish

DENOISERS = ("unet", "mlp")
INFERENCE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


@dataclass
class DenoiserFields:
    """Fields shared by DiffusionConfig and FlowConfig (each head keeps its own dataclass)."""

    denoiser: str = "unet"
    """"unet" (FiLM 1D conv U-Net over the chunk) or "mlp" (for tiny chunks; fastest act())."""
    down_dims: list[int] = field(default_factory=lambda: [32, 64, 128])
    """U-Net channels per level; diffusion_policy uses [256, 512, 1024] (~65M params). Tp must be divisible by
    2**(len(down_dims) - 1)."""
    kernel_size: int = 5
    n_groups: int = 8
    time_embed_dim: int = 64
    """Sinusoidal timestep embedding size (diffusion_policy's diffusion_step_embed_dim)."""
    mlp_hidden: list[int] = field(default_factory=lambda: [256, 256, 256])
    """Hidden sizes of the MLP denoiser."""
    activation: str = "mish"
    """Activation of the MLP denoiser: "mish" or "relu" (the U-Net keeps Mish; see EncoderConfig.activation)."""
    num_inference_steps: int = 10
    inference_dtype: str = "float32"
    """"float32" or "bfloat16": dtype of the denoiser when sampling (a cached copy, rebuilt when the weights'
    version counters change; training is always float32)."""

    def __post_init__(self):
        name = type(self).__name__
        if self.denoiser not in DENOISERS:
            raise ValueError(f"{name}.denoiser={self.denoiser!r}; valid options: {DENOISERS}")
        if not self.down_dims or any(int(d) <= 0 for d in self.down_dims):
            raise ValueError(f"{name}.down_dims={self.down_dims!r}: need a non-empty list of positive ints")
        bad = [d for d in self.down_dims if d % self.n_groups]
        if self.n_groups <= 0 or bad:
            raise ValueError(
                f"{name}.n_groups={self.n_groups!r} must divide every down_dims entry (not {bad})"
            )
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"{name}.kernel_size={self.kernel_size!r}: must be a positive odd int")
        if self.time_embed_dim < 2 or self.time_embed_dim % 2:
            raise ValueError(f"{name}.time_embed_dim={self.time_embed_dim!r}: must be an even int >= 2")
        if any(int(h) <= 0 for h in self.mlp_hidden) or not self.mlp_hidden:
            raise ValueError(f"{name}.mlp_hidden={self.mlp_hidden!r}: need a non-empty list of positive ints")
        check_activation(name, self.activation)
        if self.num_inference_steps < 1:
            raise ValueError(f"{name}.num_inference_steps={self.num_inference_steps!r}: must be >= 1")
        if self.inference_dtype not in INFERENCE_DTYPES:
            raise ValueError(
                f"{name}.inference_dtype={self.inference_dtype!r}; valid options: {tuple(INFERENCE_DTYPES)}"
            )


def build_denoiser(cfg: DenoiserFields, cond_dim: int, Tp: int, Da: int) -> nn.Module:
    if cfg.denoiser == "mlp":
        return MLPDenoiser(cond_dim, Tp, Da, cfg.mlp_hidden, cfg.time_embed_dim, cfg.activation)
    levels = len(cfg.down_dims) - 1
    if Tp % (2**levels):
        raise ValueError(
            f"{type(cfg).__name__}.down_dims={cfg.down_dims!r} halves the chunk {levels} times, so Tp "
            f"must be divisible by {2**levels}; spec Tp={Tp}. Use fewer levels or denoiser='mlp'."
        )
    return ConditionalUnet1D(Da, cond_dim, cfg.down_dims, cfg.kernel_size, cfg.n_groups, cfg.time_embed_dim)


def inference_copy(net: nn.Module, dtype: str) -> nn.Module:
    """``net`` itself for float32, else a cached eval-mode copy cast to ``dtype``.

    The cache is keyed on the parameters' version counters (bumped by optimizer steps, load_state_dict and
    any in-place update under no_grad). Writes through ``param.data`` do NOT bump them: call
    ``clear_inference_caches(net)`` after such writes.
    """
    if dtype == "float32":
        return net
    params = list(net.parameters())
    key = (dtype, params[0].device, sum(p._version for p in params), tuple(p.data_ptr() for p in params[:2]))
    cached = net.__dict__.get("_inference_copy")
    if cached is None or cached[0] != key:
        net.__dict__.pop("_inference_copy", None)  # keep deepcopy from copying the old cache
        shadow = copy.deepcopy(net).to(INFERENCE_DTYPES[dtype]).eval().requires_grad_(False)
        net.__dict__["_inference_copy"] = cached = (key, shadow)
    return cached[1]


class SinusoidalPosEmb(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.half = dim // 2

    def forward(self, t: Tensor) -> Tensor:
        # Always float32 inside (t * freq up to ~100 rad: bfloat16 would be off by ~0.4 rad); output in t's dtype.
        freqs = torch.exp(torch.arange(self.half, device=t.device) * -(math.log(10000) / (self.half - 1)))
        x = t.float()[:, None] * freqs[None]
        out = torch.cat([x.sin(), x.cos()], dim=-1)
        return out.to(t.dtype) if t.is_floating_point() else out


def time_encoder(dim: int) -> nn.Sequential:
    return nn.Sequential(SinusoidalPosEmb(dim), nn.Linear(dim, dim * 4), Mish(), nn.Linear(dim * 4, dim))


class MLPDenoiser(nn.Module):
    """MLP over the flattened chunk; concat(x, t_emb, cond) as input, with the (t_emb, cond) part of the first
    layer precomputed by ``condition``."""

    def __init__(
        self, cond_dim: int, Tp: int, Da: int, hidden: list[int], time_dim: int, activation: str = "mish"
    ):
        super().__init__()
        act = ACTIVATIONS[activation]
        self.Tp, self.Da = Tp, Da
        self.time_enc = time_encoder(time_dim)
        self.in_x = nn.Linear(Tp * Da, hidden[0])
        self.in_c = nn.Linear(time_dim + cond_dim, hidden[0], bias=False)
        layers: list[nn.Module] = []
        for a, b in zip(hidden[:-1], hidden[1:]):
            layers += [act(), nn.Linear(a, b)]
        self.body = nn.Sequential(*layers, act(), nn.Linear(hidden[-1], Tp * Da))

    def condition(self, t: Tensor, cond: Tensor) -> list[Tensor]:
        return [self.in_c(torch.cat([self.time_enc(t), cond], -1))]

    def run(self, x: Tensor, c: list[Tensor]) -> Tensor:
        return self.body(self.in_x(x.flatten(1)) + c[0]).view(-1, self.Tp, self.Da)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """x (B, Tp, Da), t (B,), cond (B, C) -> (B, Tp, Da)."""
        return self.run(x, self.condition(t, cond))


# ----------------------------------------------------------------------------------------- U-Net
_ONEDNN = torch.backends.mkldnn.is_available()


class _PackCache(dict):
    """Per-module cache of prepacked weights: never copied (deepcopy/pickle give an empty cache)."""

    def __deepcopy__(self, memo):
        return _PackCache()

    def __reduce__(self):
        return (_PackCache, ())


def _use_matmul(x: Tensor, w: Tensor) -> bool:
    # Batch-1 inference on big (memory-bound) or bfloat16 weights only: measured on 2 EPYC cores, native
    # conv kernels win for training, batched act() and small float32 nets, and are ~2x slower in bf16.
    return (
        x.shape[0] == 1
        and not torch.is_grad_enabled()
        and (w.dtype == torch.bfloat16 or w.numel() >= 1 << 18)
    )


def _linear(x2d: Tensor, mod: nn.Module, w2d: Tensor, bias: Tensor | None) -> Tensor:
    """F.linear(x2d, w2d, bias) with few rows (x2d is (L<=16, K)).

    With oneDNN, w2d is prepacked once for this row count (a copy cached on ``mod``, rebuilt when the weight's
    version counter or storage changes): packed GEMMs stream the weight at ~30-45 GB/s on 2 cores where MKL's
    skinny sgemm reaches ~10. Writes through ``param.data`` do not bump the version: call
    ``clear_inference_caches``.
    """
    if not _ONEDNN:
        return F.linear(x2d, w2d, bias)
    w = mod.weight
    key = (w._version, w.data_ptr(), w.dtype, x2d.shape[0])
    cache = mod.__dict__.setdefault("_packed", _PackCache())
    if cache.get("key") != key:
        cache["key"], cache["w"] = (
            key,
            torch.ops.mkldnn._reorder_linear_weight(w2d.contiguous(), x2d.shape[0]),
        )
    return torch.ops.mkldnn._linear_pointwise(x2d, cache["w"], bias, "none", [], "")


def clear_inference_caches(net: nn.Module) -> None:
    """Drop the sampling caches under ``net`` (the bfloat16 copy and every prepacked weight): needed after
    writes through ``param.data``, which the caches' version keys cannot see; also frees the copies."""
    for m in net.modules():
        m.__dict__.pop("_inference_copy", None)
        m.__dict__.pop("_packed", None)


class _Conv1dBF16(torch.autograd.Function):
    """Stride-1 Conv1d in bfloat16 whose backward is one forward conv (input grad) and one GEMM over the
    unfolded windows (weight grad): oneDNN's own bf16 conv backward is ~1.8x slower than that at the U-Net's
    short sequences (e.g. 25 vs 13 ms for 1024 channels, L=4, batch 64, forward + backward)."""

    @staticmethod
    def forward(ctx, x: Tensor, w: Tensor, b: Tensor | None, p: int) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.p, ctx.has_bias = p, b is not None
        return F.conv1d(x, w, b, padding=p)

    @staticmethod
    def backward(ctx, g: Tensor):
        x, w = ctx.saved_tensors
        p = ctx.p
        B, C, L = x.shape
        cout, _, k = w.shape
        gx = F.conv1d(g, w.transpose(0, 1).flip(-1), padding=k - 1 - p) if ctx.needs_input_grad[0] else None
        cols = F.pad(x, (p, p)).unfold(2, k, 1).permute(0, 2, 1, 3).reshape(B * L, C * k)
        gw = (g.permute(1, 0, 2).reshape(cout, B * L) @ cols).view(cout, C, k)
        return gx, gw, g.sum((0, 2)) if ctx.has_bias else None, None


def _bf16_autocast() -> bool:
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def conv1d(x: Tensor, conv: nn.Conv1d) -> Tensor:
    """conv(x) for x (B, Cin, L); at batch 1 without autograd as ONE GEMM over the unfolded windows.

    The GEMM is (L, Cin*k) @ W^T, i.e. a linear layer with the positions as rows, so the weight is read once
    per call near memory bandwidth (a batch-1 forward pass of a big U-Net is bound by reading its weights).
    Training under bfloat16 autocast (``train.precision=bfloat16``) uses ``_Conv1dBF16`` for big stride-1 convs.
    """
    if (
        torch.is_grad_enabled()
        and conv.stride[0] == 1
        and conv.weight.numel() >= 1 << 16  # smaller: the native kernels win
        and x.device.type == "cpu"
        and _bf16_autocast()
    ):
        bf = torch.bfloat16
        bias = conv.bias.to(bf) if conv.bias is not None else None
        with torch.autocast("cpu", enabled=False):
            return _Conv1dBF16.apply(x.to(bf), conv.weight.to(bf), bias, conv.padding[0])
    if not _use_matmul(x, conv.weight):
        return conv(x)
    k, s, p = conv.kernel_size[0], conv.stride[0], conv.padding[0]
    w = conv.weight.view(conv.out_channels, -1)  # (Cout, Cin*k): index cin*k + tap, matching cols below
    if k == 1:
        return _linear(x[0].t(), conv, w, conv.bias).t()[None]
    cols = F.pad(x[0], (p, p)).unfold(1, k, s)  # (Cin, Lout, k) view
    cols = cols.transpose(0, 1).reshape(cols.shape[1], -1)  # (Lout, Cin*k), the only copy
    return _linear(cols, conv, w, conv.bias).t()[None]


def upsample(x: Tensor, up: nn.ConvTranspose1d) -> Tensor:
    """ConvTranspose1d(C, C, 4, stride 2, padding 1): x (B, C, L) -> (B, C, 2L).

    At batch 1: y[2m] = x[m] W1 + x[m-1] W3, y[2m+1] = x[m+1] W0 + x[m] W2; one GEMM against the weight
    viewed as (Cout*4, Cin) gives every (position, tap) product, then shifted adds.
    """
    if not _use_matmul(x, up.weight):
        return up(x)
    _, C, L = x.shape
    cout = up.out_channels
    P = _linear(x[0].t(), up, up.weight.view(C, cout * 4).t(), None).view(L, cout, 4)  # bias added once below
    even = P[:, :, 1] + F.pad(P[:-1, :, 3], (0, 0, 1, 0))
    odd = P[:, :, 2] + F.pad(P[1:, :, 0], (0, 0, 0, 1))
    y = torch.stack([even, odd], 1).view(2 * L, cout) + up.bias
    return y.t()[None]


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish (x (B, C, L))."""

    def __init__(self, cin: int, cout: int, k: int, n_groups: int):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, k, padding=k // 2)
        self.norm = nn.GroupNorm(n_groups, cout)

    def forward(self, x: Tensor) -> Tensor:
        return mish(self.norm(conv1d(x, self.conv)))


class CondResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, cond_dim: int, k: int, n_groups: int):
        super().__init__()
        self.block0 = Conv1dBlock(cin, cout, k, n_groups)
        self.block1 = Conv1dBlock(cout, cout, k, n_groups)
        self.film = nn.Linear(cond_dim, 2 * cout)  # applied to mish(cond) as in diffusion_policy
        self.residual = nn.Conv1d(cin, cout, 1) if cin != cout else None

    def forward(self, x: Tensor, film: Tensor) -> Tensor:
        """x (B, cin, L), film (B, 2*cout) precomputed by ConditionalUnet1D.condition."""
        scale, bias = film[..., None].chunk(2, dim=1)
        h = self.block1(torch.addcmul(bias, self.block0(x), scale))
        return h + (conv1d(x, self.residual) if self.residual is not None else x)


class ConditionalUnet1D(nn.Module):
    def __init__(self, Da: int, global_cond_dim: int, down_dims: list[int], k: int, n_groups: int, dsed: int):
        super().__init__()
        self.time_enc = time_encoder(dsed)
        cd = dsed + global_cond_dim
        dims = [Da, *down_dims]
        in_out = list(zip(dims[:-1], dims[1:]))
        self.down = nn.ModuleList()
        for i, (a, b) in enumerate(in_out):
            last = i == len(in_out) - 1
            self.down.append(
                nn.ModuleList(
                    [
                        CondResBlock(a, b, cd, k, n_groups),
                        CondResBlock(b, b, cd, k, n_groups),
                        nn.Conv1d(b, b, 3, stride=2, padding=1) if not last else nn.Identity(),
                    ]
                )
            )
        self.mid = nn.ModuleList([CondResBlock(dims[-1], dims[-1], cd, k, n_groups) for _ in range(2)])
        self.up = nn.ModuleList()
        for a, b in reversed(in_out[1:]):
            self.up.append(
                nn.ModuleList(
                    [
                        CondResBlock(b * 2, a, cd, k, n_groups),
                        CondResBlock(a, a, cd, k, n_groups),
                        nn.ConvTranspose1d(a, a, 4, stride=2, padding=1),
                    ]
                )
            )
        self.final_block = Conv1dBlock(down_dims[0], down_dims[0], k, n_groups)
        self.final_conv = nn.Conv1d(down_dims[0], Da, 1)
        self.res_blocks = [m for m in self.modules() if isinstance(m, CondResBlock)]  # forward order

    def condition(self, t: Tensor, cond: Tensor) -> list[Tensor]:
        g = mish(torch.cat([self.time_enc(t), cond], -1))
        return [blk.film(g) for blk in self.res_blocks]

    def run(self, x: Tensor, c: list[Tensor]) -> Tensor:
        x = x.transpose(1, 2)  # (B, Tp, Da) -> (B, Da, Tp): channels-first inside
        films = iter(c)
        skips = []
        for r0, r1, down in self.down:
            x = r1(r0(x, next(films)), next(films))
            skips.append(x)
            if isinstance(down, nn.Conv1d):
                x = conv1d(x, down)
        for r in self.mid:
            x = r(x, next(films))
        for r0, r1, up in self.up:
            x = torch.cat([x, skips.pop()], dim=1)
            x = r1(r0(x, next(films)), next(films))
            x = upsample(x, up)
        return conv1d(self.final_block(x), self.final_conv).transpose(1, 2)

    def forward(self, x: Tensor, t: Tensor, cond: Tensor) -> Tensor:
        """x (B, Tp, Da), t (B,), cond (B, C) -> (B, Tp, Da)."""
        return self.run(x, self.condition(t, cond))
