"""GPT-2 and Llama as transformers' `GPT2LMHeadModel` and `LlamaForCausalLM`, so every checkpoint
is a plain HF folder.

We use the HF modules rather than hand-written ones: on CPU GPT-2's trains at the speed of a
nanoGPT-style module (`python -m benchmarks --only model_vs_nanogpt`, docs/benchmarks.md) and they
remove the export step that lm-eval would otherwise need. The loop sees only `model(input_ids)`
and `.logits`, so the architecture (`ModelPreset.arch`) is this module's business alone.
Shapes: B batch, T time (block_size), V vocab.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import AutoModelForCausalLM, GPT2Config, LlamaConfig, PretrainedConfig, PreTrainedModel

from lfr.config import ModelPreset
from lfr.data import BlockStore


def model_config(preset: ModelPreset, vocab_size: int, block_size: int, eot_id: int,
                 dropout: float = 0.0) -> PretrainedConfig:
    """The HF config of a size; the end-of-text token is also BOS/EOS (one separator token)."""
    common: dict[str, Any] = {"vocab_size": vocab_size, "bos_token_id": eot_id, "eos_token_id": eot_id,
                              "tie_word_embeddings": preset.tie_embeddings}
    if preset.arch == "llama":
        return LlamaConfig(
            hidden_size=preset.n_embd,
            num_hidden_layers=preset.n_layer,
            num_attention_heads=preset.n_head,
            num_key_value_heads=preset.kv_heads,
            intermediate_size=preset.ffn_size,
            max_position_embeddings=block_size,  # RoPE: a length for lm-eval, no parameters
            attention_dropout=dropout,  # Llama has no residual or embedding dropout
            **common,
        )
    return GPT2Config(
        n_positions=block_size,
        n_embd=preset.n_embd,
        n_layer=preset.n_layer,
        n_head=preset.n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        activation_function="gelu_pytorch_tanh",  # GPT-2's gelu_new, as one fused kernel
        **common,
    )


def build_model(config: PretrainedConfig) -> PreTrainedModel:
    return AutoModelForCausalLM.from_config(config, attn_implementation="sdpa")


def num_params(model: torch.nn.Module) -> int:
    """Parameter count with tied weights counted once, position embeddings included."""
    return sum(p.numel() for p in model.parameters())


def embedding_params(model: PreTrainedModel) -> int:
    """The token embedding's parameters (the output layer too, when tied) and GPT-2's position
    embeddings: num_params minus these is the non-embedding count."""
    positions = model.transformer.wpe.weight.numel() if model.config.model_type == "gpt2" else 0
    return model.get_input_embeddings().weight.numel() + positions


def flops_per_token(model: PreTrainedModel) -> float:
    """Training FLOPs per token, nanoGPT's estimate: 6N + 12 L T C, N without position embeddings
    (GPT-2's learned ones; Llama's RoPE has none) and an untied output layer counted in N."""
    cfg = model.config
    positions = model.transformer.wpe.weight.numel() if cfg.model_type == "gpt2" else 0
    n = num_params(model) - positions
    return 6 * n + 12 * cfg.num_hidden_layers * cfg.max_position_embeddings * cfg.hidden_size


def autocast(device: torch.device, dtype: str) -> Any:
    """bf16 autocast on CUDA when train.dtype is bfloat16; float32 everywhere else."""
    if device.type == "cuda" and dtype == "bfloat16":
        return torch.autocast("cuda", torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def scored_batches(model: torch.nn.Module, store: BlockStore, ids: np.ndarray, batch_size: int,
                   device: torch.device, dtype: str,
                   chunk_tokens: int | None = None) -> Iterator[tuple[slice, torch.Tensor]]:
    """Every batched no-grad loss pass (validation, profiling, reference scoring): the model in
    eval mode over `ids` in batches; yields (positions in `ids`, their per-block losses on the
    device). `chunk_tokens`: the logits a few blocks at a time (chunked_block_losses; a plain HF
    model, not a DDP or compiled wrapper). The model's train/eval mode is restored at the end."""
    was_training = model.training
    model.eval()
    for i in range(0, len(ids), batch_size):
        batch = store.batch(ids[i : i + batch_size])
        x, y = (torch.from_numpy(a).to(device, non_blocking=True) for a in batch)
        with autocast(device, dtype):
            losses = block_losses(model, x, y) if chunk_tokens is None else \
                chunked_block_losses(model, x, y, chunk_tokens)
            yield slice(i, i + len(x)), losses
    model.train(was_training)


def block_losses(model: torch.nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Mean next-token cross-entropy of each block, shape (B,), from one forward pass.

    The same numbers serve as the training loss (their mean) and as the per-block score that
    data-selection methods record, so recording costs no extra FLOPs.
    """
    return mean_block_ce(model(input_ids=x).logits, y)


def mean_block_ce(logits: Tensor, y: Tensor) -> Tensor:
    """Each block's mean token cross-entropy, (B,), from its logits (B, T, V), in float32."""
    loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none")
    return loss.view(y.shape).mean(dim=1)


def chunked_block_losses(model: PreTrainedModel, x: Tensor, y: Tensor, chunk_tokens: int) -> Tensor:
    """block_losses of a no-grad pass in bounded memory: the model's body once, without the
    key/value cache that HF keeps by default (every layer's keys and values: 40 GB for GPT-2 XL
    at 128 blocks of 1024), then its output layer and the cross-entropy a few whole blocks at a
    time, at most `chunk_tokens` tokens (one block if a block is longer): memory holds one
    chunk's logits, not the batch's B x T x V (~65 GB at GPT-2's vocabulary, batch 128, block
    1024, with their float32 copy and softmax)."""
    hidden = model.base_model(input_ids=x, use_cache=False).last_hidden_state  # (B, T, C)
    head, rows = model.get_output_embeddings(), max(1, chunk_tokens // x.shape[1])
    return torch.cat([mean_block_ce(head(hidden[i : i + rows]), y[i : i + rows])
                      for i in range(0, len(x), rows)])


def configure_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                        betas: tuple[float, float], device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (nanoGPT's split), fused on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device.type == "cuda")
