"""FLOP accounting for one causal LM, in the PaLM/Chinchilla convention.

Forward FLOPs of one sequence of L tokens: 2·N·L + 4·n_layers·d_attn·L², where N counts the
parameters of every matmul (the LM head included, the input embedding lookup excluded) and the
second term is attention's QKᵀ and AV products, counted in full (no causal discount) as in
PaLM's MFU formula. Backward is twice the forward, so training costs 3× forward (6·N per token
plus the attention term). Padding tokens are not counted: they are an implementation choice,
not work the method needs.

Frozen weights (a LoRA's base) skip their weight-gradient matmuls: backward is then the
activation gradients of every matmul (2·N per token) plus the weight gradients of the trained
ones (2·N_trained), so training costs 4·N + 6·N_lora per token (litgpt's rule). Gradient
checkpointing's recomputed forward (`recompute_flops`) is hardware work, not work the method
needs: it counts toward neither the matched budget nor MFU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ModelShape:
    matmul_params: int
    n_layers: int
    attn_width: int
    trained_matmul_params: int | None = None  # None: every matmul's weights train
    head_params: int = 0  # the LM head's (its forward is not recomputed by layer checkpointing)

    @classmethod
    def of(cls, model: torch.nn.Module) -> ModelShape:
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        matmul = sum(m.weight.numel() for m in linears)
        trained = sum(m.weight.numel() for m in linears if m.weight.requires_grad)
        config = model.config
        head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
        # A model with no trainable weight at all (the frozen start model) stands for its full
        # fine-tune; one with some (LoRA's adapters over a frozen base) trains only those.
        partly = 0 < trained < matmul
        return cls(matmul, config.num_hidden_layers, config.num_attention_heads * head_dim,
                   trained if partly else None, head.weight.numel() if head is not None else 0)

    @classmethod
    def of_architecture(cls, arch, lora=None) -> ModelShape:
        """From a config's shape (harness.memory.Architecture), with LoRA's adapters if given."""
        head = arch.vocab * arch.hidden
        base = arch.layers * sum(arch.layer_linear_parameters().values()) + head
        adapters = arch.lora_parameters(lora.r, lora.targets) if lora else 0
        return cls(base + adapters, arch.layers, arch.q_width, adapters if lora else None, head)

    @property
    def trained(self) -> int:
        return self.matmul_params if self.trained_matmul_params is None else self.trained_matmul_params

    def forward_flops(self, lengths: torch.Tensor | list[int]) -> float:
        """Forward FLOPs of sequences with these token counts (prompt + completion, no padding)."""
        lengths = torch.as_tensor(lengths, dtype=torch.float64)
        linear = 2.0 * self.matmul_params * lengths.sum()
        attention = 4.0 * self.n_layers * self.attn_width * (lengths**2).sum()
        return float(linear + attention)

    def train_flops(self, lengths: torch.Tensor | list[int]) -> float:
        """Forward and backward: three forwards when every weight trains; frozen weights skip
        their weight gradients (2·N_frozen per token fewer)."""
        lengths = torch.as_tensor(lengths, dtype=torch.float64)
        frozen = self.matmul_params - self.trained
        return 3.0 * self.forward_flops(lengths) - float(2.0 * frozen * lengths.sum())

    def recompute_flops(self, lengths: torch.Tensor | list[int]) -> float:
        """Gradient checkpointing's second forward of the decoder layers (the LM head aside)."""
        lengths = torch.as_tensor(lengths, dtype=torch.float64)
        return self.forward_flops(lengths) - float(2.0 * self.head_params * lengths.sum())

    def generation_flops(self, prompt_lengths: list[int], new_tokens: list[int]) -> float:
        """Sampling with a KV cache: each new token is one forward step over its growing context."""
        total = 0.0
        for p, n in zip(prompt_lengths, new_tokens):
            contexts = torch.arange(p + 1, p + n + 1, dtype=torch.float64)
            total += float(2.0 * self.matmul_params * n + 4.0 * self.n_layers * self.attn_width * contexts.sum())
        return total
