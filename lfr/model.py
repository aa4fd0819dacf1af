"""GPT-2 as transformers' `GPT2LMHeadModel`, so every checkpoint is a plain HF folder.

We use the HF module rather than a hand-written one: on CPU it trains at the speed of a
nanoGPT-style module (`python -m benchmarks --only model_vs_nanogpt`, README: Speed) and it
removes the export step that lm-eval would otherwise need. Shapes: B batch, T time (block_size),
V vocab.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import GPT2Config, GPT2LMHeadModel

from lfr.config import ModelPreset
from lfr.data import BlockStore


def gpt2_config(preset: ModelPreset, vocab_size: int, block_size: int, eot_id: int,
                dropout: float = 0.0) -> GPT2Config:
    return GPT2Config(
        vocab_size=vocab_size,
        n_positions=block_size,
        n_embd=preset.n_embd,
        n_layer=preset.n_layer,
        n_head=preset.n_head,
        resid_pdrop=dropout,
        embd_pdrop=dropout,
        attn_pdrop=dropout,
        bos_token_id=eot_id,
        eos_token_id=eot_id,
        tie_word_embeddings=True,
        activation_function="gelu_pytorch_tanh",  # GPT-2's gelu_new, as one fused kernel
    )


def build_model(config: GPT2Config) -> GPT2LMHeadModel:
    model = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")
    return model


def num_params(model: torch.nn.Module) -> int:
    """Parameter count with tied weights counted once, position embeddings included."""
    return sum(p.numel() for p in model.parameters())


def flops_per_token(model: torch.nn.Module) -> float:
    """Training FLOPs per token, nanoGPT's estimate: 6N + 12 L T C (N without position embeddings)."""
    cfg = model.config
    n = num_params(model) - model.transformer.wpe.weight.numel()
    return 6 * n + 12 * cfg.n_layer * cfg.n_positions * cfg.n_embd


def autocast(device: torch.device, dtype: str) -> Any:
    """bf16 autocast on CUDA when train.dtype is bfloat16; float32 everywhere else."""
    if device.type == "cuda" and dtype == "bfloat16":
        return torch.autocast("cuda", torch.bfloat16)
    return contextlib.nullcontext()


@torch.no_grad()
def scored_batches(model: torch.nn.Module, store: BlockStore, ids: np.ndarray, batch_size: int,
                   device: torch.device, dtype: str) -> Iterator[tuple[slice, torch.Tensor]]:
    """Every batched no-grad loss pass (validation, profiling, reference scoring): the model in
    eval mode over `ids` in batches; yields (positions in `ids`, their per-block losses on the
    device). The model's train/eval mode is restored at the end."""
    was_training = model.training
    model.eval()
    for i in range(0, len(ids), batch_size):
        batch = store.batch(ids[i : i + batch_size])
        x, y = (torch.from_numpy(a).to(device, non_blocking=True) for a in batch)
        with autocast(device, dtype):
            yield slice(i, i + len(x)), block_losses(model, x, y)
    model.train(was_training)


def block_losses(model: torch.nn.Module, x: Tensor, y: Tensor) -> Tensor:
    """Mean next-token cross-entropy of each block, shape (B,), from one forward pass.

    The same numbers serve as the training loss (their mean) and as the per-block score that
    data-selection methods record, so recording costs no extra FLOPs.
    """
    logits = model(input_ids=x).logits  # (B, T, V)
    loss = F.cross_entropy(logits.flatten(0, 1).float(), y.flatten(), reduction="none")
    return loss.view(y.shape).mean(dim=1)


def configure_optimizer(model: torch.nn.Module, lr: float, weight_decay: float,
                        betas: tuple[float, float], device: torch.device) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (nanoGPT's split), fused on CUDA."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=device.type == "cuda")
