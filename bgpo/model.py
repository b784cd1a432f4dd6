"""LLaDA: a bidirectional Llama-style masked-diffusion transformer, as a `transformers.PreTrainedModel`.

Compatible with the official `GSAI-ML/LLaDA-8B-Instruct` checkpoint: `LLaDAConfig` reads its
`config.json` unchanged and the parameter names equal the checkpoint's 291 tensor names, so
`LLaDAModelLM.from_pretrained(dir)` loads the real weights. One block (no biases anywhere):

    h = x + attn_out( Attn( RoPE(q_proj n), RoPE(k_proj n), v_proj n ) ),   n = RMSNorm_attn(x)
    y = h + ff_out( silu(ff_proj m) * up_proj m ),                          m = RMSNorm_ff(h)
    RMSNorm(x) = w * x / sqrt(mean(x^2) + eps)
    Attn(q, k, v) = softmax(q k^T / sqrt(d_head) + B) v     # B: 0 or -inf; NO causal mask

and logits = ff_out(RMSNorm_f(y_L)) with an output matrix separate from the embedding `wte`.
RoPE rotates channel pairs (i, i + d_head/2) of q and k by the angle p * theta^(-2i/d_head) at position
p, in float32 ("rope_full_precision"); since q.k then depends on the position difference only,
the positions are counted from each sequence's first real token (left padding, packing) without
changing the maths.

Attention backends: PyTorch SDPA (any device; padding keys masked by B). Packed sequences
(`cu_seqlens`, no padding) on CUDA in half precision go through a varlen kernel chosen by
`LLaDAModelLM.set_packed_attention`: "varlen" (default; PyTorch's own
`torch.nn.attention.varlen.varlen_attn`, no extra package), "flash-attn" (the flash-attn package's
`flash_attn_varlen_func`) or "sdpa"; anywhere else (CPU, float32) SDPA with a block-diagonal B,
which computes the same attention.

Logits only where needed: `forward(..., logits_positions=mask)` returns the logits of the positions
where the bool ``mask`` (B, T) is true, (K, V) in row-major order, so neither the sampler nor the
loss pays for a (B, T, V) tensor when it needs a block or the masked positions only.

Cached forwards for the sampler (`KVCache`): a full forward with ``kv_cache=cache`` stores every layer's
keys and values (after RoPE); a *window* forward ``forward(x[:, w], kv_cache=cache, window=w)`` then runs
only positions ``w`` through the blocks, writes their fresh keys/values over the cached ones and lets them
attend to all ``T`` keys. Where nothing outside ``w`` changed since the fill this is the full forward's
result at ``w`` (the exactness test, float64); where it did, the other positions' keys/values are stale:
Fast-dLLM's approximate block-wise cache, which `bgpo.diffusion.generate` uses between refreshes.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

# transformers imports torchao (a dependency, for bgpo.optim) whenever it is installed; its import
# warns about quantisation kernels bgpo never uses and torch about its enum registrations
for _name in ("torchao", "torch.utils._pytree"):
    logging.getLogger(_name).setLevel(logging.ERROR)
from transformers import PretrainedConfig, PreTrainedModel  # noqa: E402
from transformers.modeling_layers import GradientCheckpointingLayer  # noqa: E402
from transformers.modeling_outputs import MaskedLMOutput  # noqa: E402

from bgpo import tokenizer as _tok  # noqa: E402
from bgpo.errors import BGPOError  # noqa: E402

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
PACKED_ATTENTION = ("varlen", "flash-attn", "sdpa")


class LLaDAConfig(PretrainedConfig):
    """The fields of LLaDA's `config.json` (defaults = LLaDA-8B-Instruct); unknown keys are kept as attributes.

    Only the llama-type block this module implements is accepted: anything else raises `BGPOError`
    naming the field. `init_fn` ("mitchell" in the checkpoint) is stored but not reproduced: fresh
    weights use a normal(0, init_std) init, which only matters for training from scratch.
    """

    model_type = "llada"
    attribute_map = {"hidden_size": "d_model", "num_hidden_layers": "n_layers", "num_attention_heads": "n_heads",
                     "num_key_value_heads": "n_kv_heads", "intermediate_size": "mlp_hidden_size",
                     "max_position_embeddings": "max_sequence_length"}

    d_model: int = 4096
    n_layers: int = 32
    n_heads: int = 32
    n_kv_heads: int | None = 32
    mlp_hidden_size: int | None = 12288
    mlp_ratio: int = 4
    vocab_size: int = 126464
    embedding_size: int | None = 126464
    max_sequence_length: int = 4096
    rope: bool = True
    rope_theta: float = 500000.0
    rope_full_precision: bool = True
    rms_norm_eps: float = 1e-5
    layer_norm_type: str = "rms"
    layer_norm_with_affine: bool = True
    bias_for_layer_norm: bool = False
    attention_layer_norm: bool = False
    block_type: str = "llama"
    activation_type: str = "silu"
    alibi: bool = False
    include_bias: bool = False
    include_qkv_bias: bool = False
    weight_tying: bool = False
    multi_query_attention: bool | None = None
    scale_logits: bool = False
    input_emb_norm: bool = False
    flash_attention: bool = False
    flash_attn_varlen: bool = False
    init_fn: str = "mitchell"
    init_std: float = 0.02
    mask_token_id: int = 126336
    eos_token_id: int = 126081
    pad_token_id: int = 126081
    bos_token_id: int | None = 126080
    use_cache: bool = False

    def __post_init__(self, **kwargs):
        super().__post_init__(**kwargs)
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.mlp_hidden_size is None:
            self.mlp_hidden_size = self.mlp_ratio * self.d_model
        if self.embedding_size is None:
            self.embedding_size = self.vocab_size
        self._check()

    def _check(self) -> None:
        """Reject configs this module would silently get wrong (one line: field, value, fix)."""
        need = {"block_type": "llama", "layer_norm_type": "rms", "activation_type": "silu", "alibi": False,
                "rope": True, "include_bias": False, "include_qkv_bias": False, "bias_for_layer_norm": False,
                "attention_layer_norm": False, "input_emb_norm": False, "scale_logits": False,
                "layer_norm_with_affine": True, "weight_tying": False}
        for field, want in need.items():
            if getattr(self, field) != want:
                raise BGPOError(f"LLaDA config: {field}={getattr(self, field)!r} is not supported by bgpo.model "
                                f"(LLaDA-8B uses {want!r}); set {field} to {want!r}")
        for field in ("attention_dropout", "residual_dropout", "embedding_dropout"):  # extras in config.json
            if getattr(self, field, 0.0):
                raise BGPOError(f"LLaDA config: {field}={getattr(self, field)} is not implemented; set it to 0.0")
        if self.multi_query_attention:
            raise BGPOError("LLaDA config: multi_query_attention=true is not supported; set n_kv_heads=1 instead")
        for field in ("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size", "vocab_size"):
            if not isinstance(getattr(self, field), int) or getattr(self, field) < 1:
                raise BGPOError(f"LLaDA config: {field}={getattr(self, field)!r} must be a positive integer")
        if self.d_model % self.n_heads or (self.d_model // self.n_heads) % 2:
            raise BGPOError(f"LLaDA config: d_model={self.d_model} must be n_heads={self.n_heads} times an even "
                            f"head size; change d_model or n_heads")
        if self.n_heads % self.n_kv_heads:
            raise BGPOError(f"LLaDA config: n_kv_heads={self.n_kv_heads} must divide n_heads={self.n_heads}")
        if self.embedding_size < self.vocab_size:
            raise BGPOError(f"LLaDA config: embedding_size={self.embedding_size} < vocab_size={self.vocab_size}; "
                            f"set embedding_size >= vocab_size")
        for field in ("mask_token_id", "eos_token_id", "pad_token_id"):
            if not isinstance(getattr(self, field), int) or not 0 <= getattr(self, field) < self.vocab_size:
                raise BGPOError(f"LLaDA config: {field}={getattr(self, field)} is outside the vocabulary "
                                f"(vocab_size={self.vocab_size}); use the tokenizer's id")


def preset_config(name: str, **overrides) -> LLaDAConfig:
    """Named sizes. "tiny": tests (~0.1M params); "small": CPU SFT/RL (~1.9M); "llada-8b": the official values.

    tiny and small use the character tokenizer's vocabulary and special ids (`bgpo.tokenizer`), so the
    same code serves them and the 8B model. `overrides` replace any field, e.g. `preset_config("small", n_layers=6)`.
    """
    char_vocab = dict(vocab_size=_tok.VOCAB_SIZE, embedding_size=_tok.VOCAB_SIZE, mask_token_id=_tok.MASK_ID,
                      eos_token_id=_tok.EOS_ID, pad_token_id=_tok.EOS_ID, bos_token_id=_tok.BOS_ID,
                      max_sequence_length=1024, rope_theta=10000.0)
    presets = {
        "tiny": dict(char_vocab, d_model=64, n_layers=2, n_heads=4, n_kv_heads=4, mlp_hidden_size=128),
        "small": dict(char_vocab, d_model=192, n_layers=4, n_heads=6, n_kv_heads=6, mlp_hidden_size=512),
        "llada-8b": {},
    }
    if name not in presets:
        raise BGPOError(f"unknown model preset {name!r}; choose one of {sorted(presets)}")
    return LLaDAConfig(**{**presets[name], **overrides})


class RMSNorm(nn.Module):
    """y = w * x / sqrt(mean_i x_i^2 + eps), computed in at least float32, learnable w, no bias."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x32 = x.to(_at_least_float32(x.dtype))
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(x.dtype)


def _at_least_float32(dtype: torch.dtype) -> torch.dtype:
    """float32 for half types, the dtype itself for float32/float64 (float64 derivation checks stay exact)."""
    return torch.promote_types(dtype, torch.float32)


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float,
                 dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of angle p * theta^(-2i/d) for positions p (B, T) -> (B, 1, T, head_dim) each, in
    at least float32 (RoPE in full precision, as LLaDA's ``rope_full_precision``)."""
    dtype = _at_least_float32(dtype)
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, device=positions.device, dtype=dtype) / head_dim)
    angles = positions.to(dtype)[..., None] * inv_freq  # (B, T, head_dim/2)
    angles = torch.cat([angles, angles], dim=-1)[:, None]  # (B, 1, T, head_dim)
    return angles.cos(), angles.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (x_i, x_{i+d/2}) of x (B, H, T, d): x cos + rotate_half(x) sin, in at least float32."""
    x32 = x.to(_at_least_float32(x.dtype))
    x1, x2 = x32.chunk(2, dim=-1)
    return (x32 * cos + torch.cat([-x2, x1], dim=-1) * sin).to(x.dtype)


@dataclass
class KVCache:
    """Every layer's keys and values of a whole ``(B, T)`` sequence, kept between sampler steps.

    A full forward with ``kv_cache=`` fills it (and the RoPE angles and key-padding bias of the ``T``
    positions); a window forward reads it and overwrites the window's entries with fresh ones. Keys are
    stored after RoPE and before GQA's head repetition: ``(B, n_kv_heads, T, head_dim)`` per layer.
    """

    keys: list[torch.Tensor] = field(default_factory=list)
    values: list[torch.Tensor] = field(default_factory=list)
    cos: torch.Tensor | None = None  # (B, 1, T, head_dim)
    sin: torch.Tensor | None = None
    attn_bias: torch.Tensor | None = None  # (B, 1, 1, T) True = a real key, or None (no padding)

    def start(self, cos: torch.Tensor, sin: torch.Tensor, attn_bias: torch.Tensor | None) -> None:
        """Begin a fill: forget the old entries, keep the angles and the padding of the new sequence."""
        self.keys, self.values, self.cos, self.sin, self.attn_bias = [], [], cos, sin, attn_bias

    @property
    def length(self) -> int:
        return 0 if self.cos is None else self.cos.shape[2]

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor,
               window: slice | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Store layer ``layer``'s ``k, v`` (a fill) or write them over the window; return all ``T`` keys/values."""
        if window is None:
            self.keys.append(k)
            self.values.append(v)
            return k, v
        self.keys[layer][:, :, window] = k
        self.values[layer][:, :, window] = v
        return self.keys[layer], self.values[layer]


class LLaDABlock(GradientCheckpointingLayer):
    """One bidirectional Llama block (parameter names as in the checkpoint)."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        d, h, kv = config.d_model, config.n_heads, config.n_kv_heads
        self.n_heads, self.n_kv_heads, self.head_dim = h, kv, d // h
        self.attn_norm = RMSNorm(d, config.rms_norm_eps)
        self.q_proj = nn.Linear(d, d, bias=False)
        self.k_proj = nn.Linear(d, kv * self.head_dim, bias=False)
        self.v_proj = nn.Linear(d, kv * self.head_dim, bias=False)
        self.attn_out = nn.Linear(d, d, bias=False)
        self.ff_norm = RMSNorm(d, config.rms_norm_eps)
        self.ff_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)  # gate: silu applied
        self.up_proj = nn.Linear(d, config.mlp_hidden_size, bias=False)
        self.ff_out = nn.Linear(config.mlp_hidden_size, d, bias=False)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, attn_bias: torch.Tensor | None,
                cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None,
                kernel: str = "sdpa", cache: KVCache | None = None, layer: int = 0,
                window: slice | None = None) -> torch.Tensor:
        B, T, _ = x.shape  # (batch, seq, d_model); with a window, T = the window's length
        n = self.attn_norm(x)
        q = self.q_proj(n).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.k_proj(n).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, T, hd)
        v = self.v_proj(n).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, KV, T, hd)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:  # keys/values of all cached positions: (B, KV, T_cache, hd)
            k, v = cache.update(layer, k, v, window)
        if kernel == "flash-attn":  # packed: (1, N) tokens, sequences delimited by cu_seqlens
            from flash_attn import flash_attn_varlen_func  # optional dependency: imported only when used

            qf, kf, vf = (t[0].transpose(0, 1) for t in (q, k, v))  # (N, heads, hd), GQA handled by the kernel
            a = flash_attn_varlen_func(qf, kf, vf, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen, causal=False)
            return self._mlp(x, a.reshape(1, T, -1))  # (1, N, d_model)
        if self.n_kv_heads != self.n_heads:  # GQA: each kv head serves n_heads / n_kv_heads query heads
            k = k.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
            v = v.repeat_interleave(self.n_heads // self.n_kv_heads, dim=1)
        if kernel == "varlen":
            from torch.nn.attention.varlen import varlen_attn

            qf, kf, vf = (t[0].transpose(0, 1) for t in (q, k, v))  # (N, H, hd)
            # the seven positional arguments only: the keywords differ between torch 2.10, 2.11 and 2.13,
            # and every version defaults to full (non-causal) attention with scale 1/sqrt(hd)
            a = varlen_attn(qf, kf, vf, cu_seqlens, cu_seqlens, max_seqlen, max_seqlen)  # (N, H, hd)
            return self._mlp(x, a.reshape(1, T, -1))
        # (B, H, T, hd); with a cache the keys are all T_cache positions, the queries the window's T
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, is_causal=False)
        return self._mlp(x, a.transpose(1, 2).reshape(B, T, -1))  # (B, T, d_model)

    def _mlp(self, x: torch.Tensor, a: torch.Tensor) -> torch.Tensor:
        """Residual attention output, then the SwiGLU feed-forward: ``h + ff_out(silu(ff_proj m) * up_proj m)``."""
        h = x + self.attn_out(a)
        m = self.ff_norm(h)
        return h + self.ff_out(F.silu(self.ff_proj(m)) * self.up_proj(m))


def packed_kernel(x: torch.Tensor, preference: str) -> str:
    """The attention kernel of a packed forward: ``preference`` where it can run, else "sdpa".

    The varlen kernels need CUDA tensors in fp16/bf16 (or CUDA half autocast); on CPU or in float32
    the block-diagonal SDPA computes the same attention. "varlen" also falls back to SDPA on a torch
    without `torch.nn.attention.varlen` (before 2.10); "flash-attn" was checked for at
    `set_packed_attention`.
    """
    half = (torch.float16, torch.bfloat16)
    if preference == "sdpa" or not x.is_cuda or not (
            x.dtype in half or (torch.is_autocast_enabled("cuda") and torch.get_autocast_dtype("cuda") in half)):
        return "sdpa"
    if preference == "varlen":
        try:
            from torch.nn.attention import varlen  # noqa: F401
        except ImportError:
            return "sdpa"
    return preference


def init_model(config: LLaDAConfig, *, device: torch.device | str | None = None,
               dtype: torch.dtype = torch.float32) -> "LLaDAModelLM":
    """A freshly initialised model built directly on ``device`` in ``dtype``.

    No float32 host copy is made first, so the 8B shape (16 GB in bf16) builds on one GPU in a second
    where ``LLaDAModelLM(config).to(device, dtype)`` would need 32 GB of host memory first.
    """
    with torch.device(device or "cpu"):
        return LLaDAModelLM._from_config(config, dtype=dtype)


def resolve_dtype(name: str) -> torch.dtype:
    """``"bfloat16"`` -> ``torch.bfloat16`` (the names of the ``model.dtype`` config field)."""
    if name not in DTYPES:
        raise BGPOError(f"model dtype must be one of {', '.join(DTYPES)}; got {name!r}")
    return DTYPES[name]


class LLaDAModel(nn.Module):
    """Holds `transformer` = {wte, blocks, ln_f, ff_out} so state-dict names match the checkpoint."""

    def __init__(self, config: LLaDAConfig):
        super().__init__()
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(config.embedding_size, config.d_model),
            blocks=nn.ModuleList(LLaDABlock(config) for _ in range(config.n_layers)),
            ln_f=RMSNorm(config.d_model, config.rms_norm_eps),
            ff_out=nn.Linear(config.d_model, config.embedding_size, bias=False),  # untied output layer
        ))


class LLaDAModelLM(PreTrainedModel):
    """LLaDA mask predictor: input ids -> logits at every position, bidirectional attention.

    forward(input_ids (B, T), attention_mask (B, T) 1 = real / 0 = padding) -> .logits (B, T, vocab);
    or packed: forward(input_ids (1, N), cu_seqlens (S+1,) int32, max_seqlen) -> .logits (1, N, vocab)
    with attention confined to each sequence and positions restarting at 0 in each. With
    ``logits_positions`` (bool, the shape of input_ids) only those rows: .logits (K, vocab).
    """

    config_class = LLaDAConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    supports_gradient_checkpointing = True
    _no_split_modules = ["LLaDABlock"]
    _supports_sdpa = True  # packed input picks its varlen kernel itself (set_packed_attention), not attn_implementation

    def __init__(self, config: LLaDAConfig):
        super().__init__(config)
        self.model = LLaDAModel(config)
        self.packed_attention = "varlen"
        self.post_init()

    def set_packed_attention(self, name: str) -> None:
        """Kernel for packed sequences on CUDA half precision: "varlen" (PyTorch's `varlen_attn`, the
        default), "flash-attn" (needs the flash-attn package) or "sdpa" (block-diagonal mask).
        A run setting, not a property of the weights: it is not saved in config.json."""
        if name not in PACKED_ATTENTION:
            raise BGPOError(f"packed attention must be one of {', '.join(PACKED_ATTENTION)}; got {name!r}")
        if name == "flash-attn":
            try:
                import flash_attn  # noqa: F401
            except ImportError:
                raise BGPOError("packed attention 'flash-attn' needs the flash-attn package: pip install "
                                "flash-attn --no-build-isolation, or choose 'varlen' (PyTorch's own)") from None
        self.packed_attention = name

    def _init_weights(self, module: nn.Module) -> None:
        """normal(0, init_std) for linear and embedding weights, ones for RMSNorm (not LLaDA's "mitchell" init)."""
        from transformers import initialization as init

        if isinstance(module, (nn.Linear, nn.Embedding)):
            init.normal_(module.weight, mean=0.0, std=self.config.init_std)
        elif isinstance(module, RMSNorm):
            init.ones_(module.weight)

    def get_input_embeddings(self) -> nn.Embedding:
        return self.model.transformer.wte

    def set_input_embeddings(self, value: nn.Embedding) -> None:
        self.model.transformer.wte = value

    def get_output_embeddings(self) -> nn.Linear:
        return self.model.transformer.ff_out

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None, **kwargs) -> None:
        """Recompute each block in backward (transformers 5 renamed this; same behaviour, no FutureWarning)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            super().gradient_checkpointing_enable(gradient_checkpointing_kwargs, **kwargs)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                cu_seqlens: torch.Tensor | None = None, max_seqlen: int | None = None,
                logits_positions: torch.Tensor | None = None, kv_cache: KVCache | None = None,
                window: slice | None = None) -> MaskedLMOutput:
        B, T = input_ids.shape
        dev = input_ids.device
        if logits_positions is not None and (logits_positions.shape != input_ids.shape
                                             or logits_positions.dtype != torch.bool):
            raise BGPOError(f"logits_positions must be a bool tensor shaped like input_ids {tuple(input_ids.shape)};"
                            f" got {logits_positions.dtype} {tuple(logits_positions.shape)}")
        x = self.model.transformer.wte(input_ids)  # (B, T, d_model)
        cu, kernel = None, "sdpa"
        if window is not None:
            self._check_window(input_ids, attention_mask, cu_seqlens, kv_cache, window)
        if kv_cache is not None and cu_seqlens is not None:
            raise BGPOError("kv_cache works with padded (B, T) input, not packed sequences; drop cu_seqlens")
        if window is not None:  # the cached sequence's angles and padding, at the window's positions
            cos, sin, attn_bias = kv_cache.cos[:, :, window], kv_cache.sin[:, :, window], kv_cache.attn_bias
        elif cu_seqlens is not None:
            if attention_mask is not None or B != 1:
                raise BGPOError(f"packed forward takes input_ids of shape (1, N) and no attention_mask; got "
                                f"{tuple(input_ids.shape)}{' with a mask' if attention_mask is not None else ''}")
            cu = cu_seqlens.to(device=dev, dtype=torch.int32)
            bounds = cu.tolist()  # one host sync: validate, and max_seqlen for the varlen kernels
            if bounds[0] != 0 or bounds[-1] != T or any(b <= a for a, b in zip(bounds, bounds[1:])):
                raise BGPOError(f"cu_seqlens must rise strictly from 0 to N={T} (the packed length); got {bounds}")
            lengths = cu.diff()  # (S,)
            longest = max(b - a for a, b in zip(bounds, bounds[1:]))
            if max_seqlen is not None and max_seqlen < longest:
                raise BGPOError(f"max_seqlen={max_seqlen} is below the longest packed sequence ({longest}); pass {longest}")
            max_seqlen = longest
            seq_id = torch.repeat_interleave(torch.arange(len(lengths), device=dev), lengths)  # (N,)
            positions = (torch.arange(T, device=dev) - cu[seq_id])[None]  # (1, N): 0.. in each sequence
            kernel = packed_kernel(x, self.packed_attention)
            # the varlen kernels take the boundaries themselves; SDPA an explicit block-diagonal mask
            attn_bias = None if kernel != "sdpa" else (seq_id[:, None] == seq_id[None, :])[None, None]  # (1,1,N,N)
        elif attention_mask is not None:
            real = attention_mask.to(dev).bool()  # (B, T)
            positions = (real.long().cumsum(-1) - 1).clamp(min=0)  # (B, T): 0 at the first real token
            # a row with no real token may attend everywhere (its output is meaningless, but not NaN)
            attn_bias = (real | ~real.any(-1, keepdim=True))[:, None, None, :]  # (B, 1, 1, T) keys
        else:
            positions = torch.arange(T, device=dev).expand(B, T)  # (B, T)
            attn_bias = None
        if window is None:
            cos, sin = rope_cos_sin(positions, self.config.d_model // self.config.n_heads, self.config.rope_theta,
                                    self.model.transformer.wte.weight.dtype)
            if kv_cache is not None:
                kv_cache.start(cos, sin, attn_bias)
        tr = self.model.transformer
        for i, block in enumerate(tr.blocks):
            x = block(x, cos, sin, attn_bias, cu_seqlens=cu, max_seqlen=max_seqlen, kernel=kernel,
                      cache=kv_cache, layer=i, window=window)
        if logits_positions is not None:
            x = x[logits_positions.to(dev)]  # (K, d_model): the head runs on the asked positions only
        logits = tr.ff_out(tr.ln_f(x))  # (B, T, embedding_size) or (K, embedding_size)
        return MaskedLMOutput(logits=logits[..., : self.config.vocab_size])

    def _check_window(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                      cu_seqlens: torch.Tensor | None, kv_cache: KVCache | None, window: slice) -> None:
        """A window forward needs a filled cache of the same batch and input exactly as long as the window."""
        if kv_cache is None or len(kv_cache.keys) != self.config.n_layers:
            raise BGPOError("a window forward needs a KVCache filled by a full forward (kv_cache=cache, no window)")
        if attention_mask is not None or cu_seqlens is not None:
            raise BGPOError("a window forward takes its padding from the cache: pass no attention_mask/cu_seqlens")
        start, stop, step = window.indices(kv_cache.length)
        if step != 1 or stop - start != input_ids.shape[1] or input_ids.shape[0] != kv_cache.cos.shape[0]:
            raise BGPOError(f"window {window} of a cached (batch {kv_cache.cos.shape[0]}, length {kv_cache.length})"
                            f" sequence needs input_ids of shape ({kv_cache.cos.shape[0]}, {stop - start}); got "
                            f"{tuple(input_ids.shape)}")


def _register_auto() -> None:
    """Let `AutoConfig` / `AutoModel.from_pretrained` open directories whose config says model_type "llada"."""
    from transformers import AutoConfig, AutoModel, AutoModelForMaskedLM

    AutoConfig.register("llada", LLaDAConfig, exist_ok=True)
    AutoModel.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)
    AutoModelForMaskedLM.register(LLaDAConfig, LLaDAModelLM, exist_ok=True)


_register_auto()
