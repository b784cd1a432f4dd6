"""bgpo.model: checkpoint naming, config checks, attention paths (padded / packed / per sequence), RoPE, checkpointing."""

import json
import math
import sys
import types
from pathlib import Path

import pytest
import torch

from bgpo import tokenizer as tok
from bgpo.errors import BGPOError
from bgpo.model import (LLaDAConfig, LLaDAModelLM, apply_rope, init_model, packed_kernel, preset_config,
                        resolve_dtype, rope_cos_sin)

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "llada-8b-instruct"
BLOCK_NAMES = ["attn_norm", "q_proj", "k_proj", "v_proj", "attn_out", "ff_norm", "ff_proj", "up_proj", "ff_out"]


def expected_shapes(d: int, layers: int, heads: int, kv: int, mlp: int, vocab: int) -> dict[str, tuple]:
    """The checkpoint's tensor names and shapes, written out independently of the model code."""
    hd = d // heads
    per_block = {"attn_norm": (d,), "q_proj": (d, d), "k_proj": (kv * hd, d), "v_proj": (kv * hd, d),
                 "attn_out": (d, d), "ff_norm": (d,), "ff_proj": (mlp, d), "up_proj": (mlp, d), "ff_out": (d, mlp)}
    shapes = {"model.transformer.wte.weight": (vocab, d), "model.transformer.ln_f.weight": (d,),
              "model.transformer.ff_out.weight": (vocab, d)}
    for i in range(layers):
        shapes.update({f"model.transformer.blocks.{i}.{n}.weight": s for n, s in per_block.items()})
    return shapes


def state_shapes(model: torch.nn.Module) -> dict[str, tuple]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def test_tiny_naming_scheme_and_sizes():
    cfg = preset_config("tiny", n_kv_heads=2)
    model = LLaDAModelLM(cfg)
    assert state_shapes(model) == expected_shapes(64, 2, 4, 2, 128, tok.VOCAB_SIZE)
    assert sum(p.numel() for p in model.parameters()) == 87_872  # 96_064 with 4 kv heads
    assert sum(p.numel() for p in LLaDAModelLM(preset_config("tiny")).parameters()) == 96_064
    assert (cfg.mask_token_id, cfg.eos_token_id, cfg.pad_token_id, cfg.vocab_size) == (1, 0, 0, 108)


@pytest.mark.skipif(not SHARED.is_dir(), reason="../shared/llada-8b-instruct not present")
def test_official_config_builds_the_8b_checkpoint_layout():
    cfg = LLaDAConfig.from_pretrained(SHARED)
    official = json.loads((SHARED / "config.json").read_text())
    for key in ("d_model", "n_layers", "n_heads", "n_kv_heads", "mlp_hidden_size", "rope_theta", "rms_norm_eps",
                "vocab_size", "mask_token_id", "eos_token_id", "pad_token_id", "flash_attn_varlen"):
        assert getattr(cfg, key) == official[key], key
    preset = preset_config("llada-8b")  # the official values, without the file
    meta = ("flash_attention", "flash_attn_varlen", "architectures", "transformers_version")
    shared_keys = [k for k in official if k in LLaDAConfig.__dataclass_fields__ and k not in meta]
    assert len(shared_keys) == 33 and all(getattr(preset, k) == official[k] for k in shared_keys)
    with torch.device("meta"):
        model = LLaDAModelLM(cfg)
    assert sum(p.numel() for p in model.parameters()) == 8_015_581_184
    index = json.loads((SHARED / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == 2 * 8_015_581_184  # bf16
    shapes = state_shapes(model)
    assert set(shapes) == set(index["weight_map"]) and len(shapes) == 291
    assert shapes == expected_shapes(4096, 32, 32, 32, 12288, 126464)


@pytest.mark.parametrize("field,value", [("block_type", "sequential"), ("alibi", True), ("weight_tying", True),
                                         ("layer_norm_type", "layer"), ("n_heads", 5), ("n_kv_heads", 3),
                                         ("include_bias", True), ("mask_token_id", 500),
                                         ("residual_dropout", 0.1)])
def test_unsupported_config_raises_naming_the_field(field, value):
    with pytest.raises(BGPOError, match=field):
        preset_config("tiny", **{field: value})
    with pytest.raises(BGPOError, match="preset"):
        preset_config("huge")


def test_rope_is_a_rotation_by_position_times_frequency():
    hd, theta = 8, 10000.0
    x = torch.randn(1, 1, 3, hd, dtype=torch.float64)
    pos = torch.tensor([[0, 5, 17]])
    cos, sin = rope_cos_sin(pos, hd, theta)
    y = apply_rope(x, cos.double(), sin.double())
    # pairs (i, i + hd/2) as complex numbers z_i, rotated by exp(1j * p * theta^(-2i/hd))
    z = torch.complex(x[..., : hd // 2], x[..., hd // 2:])
    freq = theta ** (-torch.arange(0, hd, 2, dtype=torch.float64) / hd)
    rot = z * torch.exp(1j * pos[0, :, None].double() * freq)
    assert torch.allclose(y, torch.cat([rot.real, rot.imag], -1), atol=1e-6)  # angles made in float32
    assert torch.allclose(y[..., 0, :], x[..., 0, :])  # position 0 is the identity


def _three_sequences(dtype):
    torch.manual_seed(0)
    model = LLaDAModelLM(preset_config("tiny", n_kv_heads=2)).to(dtype).eval()
    lens = [5, 9, 3]
    seqs = [torch.randint(7, tok.VOCAB_SIZE, (n,)) for n in lens]
    return model, lens, seqs


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.float64, 1e-10)])
def test_packed_equals_single_equals_left_padded(dtype, tol):
    model, lens, seqs = _three_sequences(dtype)
    with torch.no_grad():
        single = [model(s[None]).logits[0] for s in seqs]  # (n_i, V) each
        cu = torch.tensor([0, 5, 14, 17], dtype=torch.int32)
        packed = model(torch.cat(seqs)[None], cu_seqlens=cu, max_seqlen=9).logits[0]  # (17, V)
        width = max(lens)
        ids = torch.full((3, width), tok.EOS_ID)
        mask = torch.zeros(3, width, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, width - len(s):], mask[i, width - len(s):] = s, 1
        padded = model(ids, attention_mask=mask).logits  # (3, 9, V)
        ids[mask == 0] = 42  # other padding ids must change nothing at real positions
        repadded = model(ids, attention_mask=mask).logits
    assert packed.shape == (17, tok.VOCAB_SIZE) and single[0].dtype == dtype
    for i, s in enumerate(seqs):
        assert (packed[cu[i]:cu[i + 1]] - single[i]).abs().max() < tol
        assert (padded[i, width - len(s):] - single[i]).abs().max() < tol
        assert (repadded[i, width - len(s):] - single[i]).abs().max() < tol
    assert single[0].std() > 0.05  # real, non-constant logits


def _reference_varlen(q, k, v, cu, group: int):
    """Attention within each packed sequence, written independently: (N, H, hd) -> (N, H, hd)."""
    out = torch.empty_like(q)
    for a, b in zip(cu.tolist(), cu.tolist()[1:]):
        qs, ks, vs = (t[a:b].transpose(0, 1) for t in (q, k, v))  # (heads, n, hd)
        ks, vs = ks.repeat_interleave(group, 0), vs.repeat_interleave(group, 0)
        out[a:b] = torch.nn.functional.scaled_dot_product_attention(qs, ks, vs).transpose(0, 1)
    return out


def test_varlen_kernels_match_block_diagonal_sdpa(monkeypatch):
    """The varlen and flash-attn branches, run on CPU with stand-in kernels that follow each one's contract:
    PyTorch's `varlen_attn` gets exactly its seven positional arguments (kv heads repeated: no GQA keyword,
    which torch 2.11 may lack), flash-attn's `flash_attn_varlen_func` the kv heads as they are."""
    import torch.nn.attention.varlen as tv

    import bgpo.model as bm

    calls = []

    def fake_torch_varlen(q, k, v, cu_q, cu_k, max_q, max_k, **kwargs):
        assert not kwargs and q.shape[1:] == k.shape[1:] == (4, 16) and cu_q.dtype == torch.int32
        calls.append(("varlen", cu_q.tolist(), max_q))
        return _reference_varlen(q, k, v, cu_q, 1)

    def fake_flash(q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=0.0, softmax_scale=None, causal=False):
        assert q.shape[1:] == (4, 16) and k.shape[1:] == (2, 16) and cu_q.dtype == torch.int32 and not causal
        calls.append(("flash-attn", cu_q.tolist(), max_q))
        return _reference_varlen(q, k, v, cu_q, 2)

    monkeypatch.setattr(tv, "varlen_attn", fake_torch_varlen)
    monkeypatch.setitem(sys.modules, "flash_attn", types.SimpleNamespace(flash_attn_varlen_func=fake_flash))
    model, _, seqs = _three_sequences(torch.float32)
    cu = torch.tensor([0, 5, 14, 17], dtype=torch.int32)
    out = {}
    for name in ("varlen", "flash-attn", "sdpa"):
        model.set_packed_attention(name)
        monkeypatch.setattr(bm, "packed_kernel", lambda x, preference: preference)  # as if CUDA bf16
        with torch.no_grad():
            out[name] = model(torch.cat(seqs)[None], cu_seqlens=cu, max_seqlen=9).logits
    assert calls == [("varlen", [0, 5, 14, 17], 9)] * 2 + [("flash-attn", [0, 5, 14, 17], 9)] * 2  # per layer
    assert (out["varlen"] - out["sdpa"]).abs().max() < 1e-5
    assert (out["flash-attn"] - out["sdpa"]).abs().max() < 1e-5


def test_packed_kernel_choice_and_validation(monkeypatch):
    cuda_bf16 = types.SimpleNamespace(is_cuda=True, dtype=torch.bfloat16)
    cuda_fp32 = types.SimpleNamespace(is_cuda=True, dtype=torch.float32)
    cpu_bf16 = torch.zeros(1, dtype=torch.bfloat16)
    assert [packed_kernel(cuda_bf16, p) for p in ("varlen", "flash-attn", "sdpa")] == ["varlen", "flash-attn", "sdpa"]
    assert {packed_kernel(x, p) for x in (cuda_fp32, cpu_bf16) for p in ("varlen", "flash-attn")} == {"sdpa"}
    model = LLaDAModelLM(preset_config("tiny"))
    assert model.packed_attention == "varlen"  # PyTorch's own kernel by default
    with pytest.raises(BGPOError, match="varlen, flash-attn, sdpa"):
        model.set_packed_attention("flash_attention_2")
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # not installed: the import fails
    with pytest.raises(BGPOError, match="pip install flash-attn"):
        model.set_packed_attention("flash-attn")


@pytest.mark.parametrize("packed", [False, True])
def test_logits_positions_give_the_rows_of_the_full_logits(packed):
    """forward(..., logits_positions=m).logits == forward(...).logits[m], (K, V), and gradients flow."""
    model, lens, seqs = _three_sequences(torch.float32)
    if packed:
        ids, kw = torch.cat(seqs)[None], dict(cu_seqlens=torch.tensor([0, 5, 14, 17], dtype=torch.int32))
    else:
        ids = torch.stack([s[:3] for s in seqs])  # (3, 3)
        kw = dict(attention_mask=torch.tensor([[0, 1, 1], [1, 1, 1], [1, 1, 1]]))
    where = torch.rand(ids.shape, generator=torch.Generator().manual_seed(0)) < 0.5
    full = model(ids, **kw).logits
    some = model(ids, logits_positions=where, **kw).logits
    assert some.shape == (int(where.sum()), tok.VOCAB_SIZE) and 0 < where.sum() < where.numel()
    assert (some - full[where]).abs().max() < 1e-5
    some.sum().backward()
    assert model.model.transformer.ff_out.weight.grad.abs().sum() > 0
    assert model(ids, logits_positions=torch.zeros_like(where), **kw).logits.shape == (0, tok.VOCAB_SIZE)
    with pytest.raises(BGPOError, match="logits_positions"):
        model(ids, logits_positions=where.long(), **kw)


def test_init_model_builds_in_the_dtype_on_the_device():
    model = init_model(preset_config("tiny"), dtype=resolve_dtype("bfloat16"))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16} and torch.get_default_dtype() == torch.float32
    with torch.no_grad():
        assert model(torch.tensor([[5, 6, 7]])).logits.dtype == torch.bfloat16
    meta = init_model(preset_config("llada-8b"), device="meta", dtype=torch.bfloat16)  # 8B shape, no memory
    assert sum(p.numel() for p in meta.parameters()) == 8_015_581_184
    assert {p.device.type for p in meta.parameters()} == {"meta"}
    with pytest.raises(BGPOError, match="float32, bfloat16, float16"):
        resolve_dtype("fp8")


def test_attention_is_bidirectional():
    model, _, seqs = _three_sequences(torch.float32)
    ids = seqs[1][None].clone()
    with torch.no_grad():
        before = model(ids).logits
        ids[0, -1] = (ids[0, -1] + 1) % tok.VOCAB_SIZE  # change the LAST token only
        after = model(ids).logits
    assert (after[0, 0] - before[0, 0]).abs().max() > 1e-4  # the first position sees it


def test_packed_input_errors():
    model, _, seqs = _three_sequences(torch.float32)
    ids = torch.cat(seqs)[None]
    with pytest.raises(BGPOError, match="cu_seqlens"):
        model(ids, cu_seqlens=torch.tensor([0, 5, 16], dtype=torch.int32))
    with pytest.raises(BGPOError, match=r"\(1, N\)"):
        model(ids.expand(2, -1), cu_seqlens=torch.tensor([0, 17], dtype=torch.int32))
    with pytest.raises(BGPOError, match="max_seqlen"):
        model(ids, cu_seqlens=torch.tensor([0, 5, 14, 17], dtype=torch.int32), max_seqlen=5)


def test_gradient_checkpointing_same_grads_less_saved():
    torch.manual_seed(1)
    model = LLaDAModelLM(preset_config("tiny")).train()
    ids = torch.randint(0, tok.VOCAB_SIZE, (2, 16))

    def grads_and_saved():
        model.zero_grad()
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
            loss = torch.nn.functional.cross_entropy(model(ids).logits.flatten(0, 1), ids.flatten())
        loss.backward()
        return [p.grad.clone() for p in model.parameters()], sum(saved)

    plain, saved_plain = grads_and_saved()
    model.gradient_checkpointing_enable()
    ckpt, saved_ckpt = grads_and_saved()
    assert all(torch.allclose(a, b, atol=1e-7) for a, b in zip(plain, ckpt))
    assert saved_ckpt < 0.5 * saved_plain  # block internals are recomputed, not stored


def test_save_and_from_pretrained_round_trip(tmp_path):
    torch.manual_seed(2)
    model = LLaDAModelLM(preset_config("tiny")).eval()
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "llada"
    from transformers import AutoModel

    loaded = AutoModel.from_pretrained(tmp_path).eval()
    assert isinstance(loaded, LLaDAModelLM)
    ids = torch.randint(0, tok.VOCAB_SIZE, (1, 8))
    with torch.no_grad():
        assert torch.equal(loaded(ids).logits, model(ids).logits)


def test_init_std_and_norm_ones():
    model = LLaDAModelLM(preset_config("small"))
    assert sum(p.numel() for p in model.parameters()) == 1_812_672
    w = model.model.transformer.blocks[0].ff_proj.weight
    assert math.isclose(w.std().item(), 0.02, rel_tol=0.05)
    assert torch.equal(model.model.transformer.ln_f.weight, torch.ones(192))


def _cached_inputs(dtype=torch.float64, **overrides):
    """A tiny model and a left-padded batch of 3 sequences of 16 tokens (prompt 6)."""
    from conftest import rollout_tensors, tiny_model

    model = tiny_model(dtype, **overrides).eval()
    ids, attention, _ = rollout_tensors(batch=3, prompt_len=6, gen_len=10)
    return model, ids, attention


@pytest.mark.parametrize("kv_heads", [4, 2])
@pytest.mark.parametrize("window", [slice(6, 16), slice(6, 10), slice(10, 14), slice(0, 16)])
def test_window_forward_on_a_fresh_cache_equals_the_full_forward(kv_heads, window):
    """The cached path is exact where the cache is fresh: float64, left padding, GQA, any window."""
    from bgpo.model import KVCache

    model, ids, attention = _cached_inputs(n_kv_heads=kv_heads)
    with torch.no_grad():
        full = model(ids, attention_mask=attention).logits  # (B, T, V)
        cache = KVCache()
        model(ids, attention_mask=attention, kv_cache=cache)
        part = model(ids[:, window], kv_cache=cache, window=window).logits  # (B, W, V)
    assert (part - full[:, window]).abs().max().item() <= 1e-10


def test_window_forward_reads_the_stale_cache_outside_the_window():
    """A token changed outside the window after the fill moves the full forward, not the window forward."""
    from bgpo.model import KVCache

    model, ids, attention = _cached_inputs()
    window = slice(6, 10)
    with torch.no_grad():
        cache = KVCache()
        model(ids, attention_mask=attention, kv_cache=cache)
        changed = ids.clone()
        changed[:, 12] = (changed[:, 12] + 1) % 50 + 10
        stale = model(changed[:, window], kv_cache=cache, window=window).logits
        fresh = model(changed, attention_mask=attention).logits[:, window]
        before = model(ids, attention_mask=attention).logits[:, window]
    assert (stale - before).abs().max().item() <= 1e-10  # the window sees the keys of the old token
    assert (fresh - before).abs().max().item() > 1e-6  # which the exact model does not


def test_window_forward_in_bfloat16_matches_the_full_forward():
    from bgpo.model import KVCache

    model, ids, attention = _cached_inputs(torch.bfloat16)
    window = slice(6, 10)
    with torch.no_grad():
        full = model(ids, attention_mask=attention).logits[:, window].float()
        cache = KVCache()
        model(ids, attention_mask=attention, kv_cache=cache)
        part = model(ids[:, window], kv_cache=cache, window=window).logits.float()
    assert part.dtype == torch.float32 and (part - full).abs().max().item() <= 0.05 * full.abs().max().item()


def test_window_forward_errors_are_one_line():
    from bgpo.model import KVCache

    model, ids, attention = _cached_inputs()
    with pytest.raises(BGPOError, match="filled by a full forward"):
        model(ids[:, 6:10], window=slice(6, 10))
    cache = KVCache()
    with torch.no_grad():
        model(ids, attention_mask=attention, kv_cache=cache)
    with pytest.raises(BGPOError, match="needs input_ids of shape"):
        model(ids[:, 6:9], kv_cache=cache, window=slice(6, 10))
    with pytest.raises(BGPOError, match="padding from the cache"):
        model(ids[:, 6:10], attention_mask=attention[:, 6:10], kv_cache=cache, window=slice(6, 10))
