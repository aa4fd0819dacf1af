"""GPT-2 as transformers' `GPT2LMHeadModel`, so every checkpoint is a plain HF folder.

We use the HF module rather than a hand-written one: on CPU it trains at the speed of a
nanoGPT-style module (`python -m benchmarks --only model_vs_nanogpt`; with HF's default
Python-level `gelu_new` it was up to 8% slower) and it removes the export step that lm-eval would
otherwise need. Shapes: B batch, T time (block_size), V vocab.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import GPT2Config, GPT2LMHeadModel

from lfr.config import ModelPreset


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
        activation_function="gelu_pytorch_tanh",  # GPT-2's gelu_new, fused: a 3-9% faster CPU step
    )


def build_model(config: GPT2Config) -> GPT2LMHeadModel:
    model = GPT2LMHeadModel._from_config(config, attn_implementation="sdpa")
    return model


def num_params(model: torch.nn.Module) -> int:
    """Parameter count with tied weights counted once, position embeddings included."""
    return sum(p.numel() for p in model.parameters())


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
