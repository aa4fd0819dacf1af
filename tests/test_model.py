"""lfr/model.py: GPT-2 and Llama as transformers' modules, their per-block losses, the one scoring
pass and the FLOPs estimate; lfr/metrics.py's peak FLOP/s."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lfr.data import BlockStore
from lfr.metrics import peak_flops
from lfr.model import block_losses, build_model, flops_per_token, model_config, scored_batches


def test_checkpoint_uses_gpt2s_gelu_in_its_fused_form(trained):
    """Our models use torch's tanh-GELU, the function GPT-2's `gelu_new` computes in Python."""
    from transformers import AutoModelForCausalLM
    from transformers.activations import ACT2FN

    model = AutoModelForCausalLM.from_pretrained(trained[2] / "model")
    assert model.config.activation_function == "gelu_pytorch_tanh"
    x = torch.linspace(-8, 8, 10_001)
    act = model.transformer.h[0].mlp.act
    torch.testing.assert_close(act(x), ACT2FN["gelu_new"](x), atol=1e-6, rtol=1e-5)
    assert not torch.equal(act(x), ACT2FN["gelu"](x))  # not the exact erf GELU


def test_mfu_arithmetic_follows_nanogpt():
    from lfr.config import MODEL_PRESETS

    model = build_model(model_config(MODEL_PRESETS["gpt2"], 50257, 1024, 50256))
    n = sum(p.numel() for p in model.parameters()) - 1024 * 768
    assert n == pytest.approx(123.6e6, rel=0.01)  # GPT-2 small without position embeddings
    assert flops_per_token(model) == 6 * n + 12 * 12 * 1024 * 768
    assert peak_flops(500.0, torch.device("cpu")) == 500e12
    assert peak_flops(None, torch.device("cpu")) is None


def test_scored_batches_give_each_blocks_loss_in_eval_mode(trained):
    """The scoring pass (validation, profiling, reference scores) equals one forward of each block
    alone, whatever the batch size, and leaves the model in the mode it found it."""
    from transformers import AutoModelForCausalLM

    _, root, out, _ = trained
    model = AutoModelForCausalLM.from_pretrained(out / "model")
    model.train()
    store = BlockStore.open(root / "data", "val")
    ids = np.array([5, 0, 3, 7, 1])
    cpu = torch.device("cpu")
    for batch in (1, 2, 5):
        losses = np.empty(len(ids), dtype=np.float32)
        for part, loss in scored_batches(model, store, ids, batch, cpu, "bfloat16"):  # CPU: float32
            losses[part] = loss.numpy()
        assert model.training
        model.eval()
        with torch.no_grad():
            alone = [block_losses(model, *(torch.from_numpy(a) for a in store.batch(ids[i : i + 1])))
                     for i in range(len(ids))]
        model.train()
        np.testing.assert_allclose(losses, torch.cat(alone).numpy(), rtol=1e-5)


def test_llama_flops_count_an_untied_head_and_grouped_kv_heads_by_shape():
    """6N + 12LTC for Llama: no position embeddings to remove; untying adds the V x d head to N
    once; one KV head of 2 makes k_proj and v_proj d x d/2 (V 100, d 32, L 1, FFN 256, T 16)."""
    from lfr.config import ModelPreset

    def built(**keys):
        return build_model(model_config(ModelPreset(arch="llama", n_layer=1, n_head=2, n_embd=32, **keys),
                                        100, 16, 0))

    tied = 100 * 32 + (2 * 32 * 32 + 2 * 32 * 16) + 3 * 32 * 256 + 3 * 32  # embed, q o k v, mlp, norms
    gqa = built(n_kv_head=1)
    assert sum(p.numel() for p in gqa.parameters()) == tied
    assert gqa.model.layers[0].self_attn.k_proj.weight.shape == (16, 32)
    assert flops_per_token(gqa) == 6 * tied + 12 * 1 * 16 * 32
    untied = built(n_kv_head=1, tie_embeddings=False)
    assert untied.lm_head.weight.data_ptr() != untied.model.embed_tokens.weight.data_ptr()
    assert flops_per_token(untied) == 6 * (tied + 100 * 32) + 12 * 1 * 16 * 32
    assert built(intermediate_size=48).model.layers[0].mlp.up_proj.weight.shape == (48, 32)
