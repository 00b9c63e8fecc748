"""LoRA through peft (`train.peft`): adapters on a frozen base, the base itself as the reference,
and merged weights for evaluation.

The reference of a LoRA run is the policy with its adapters disabled (TRL's convention): no
second copy of the weights. That is the start model only if disabling the adapters reverts
everything trained, so `modules_to_save` and biased adapters are refused by the suite's schema
(harness.suite.PeftConfig.REFUSED). A reference pass runs in eval mode (no dropout).
"""

from __future__ import annotations

import torch

from harness.errors import HarnessError
from harness.memory import Architecture
from harness.suite import PeftConfig
from harness.train.sizing import lora_targets


def add_adapters(policy: torch.nn.Module, config: PeftConfig, *, gradient_checkpointing: bool = False):
    """`policy` with LoRA adapters on the targeted linear layers; only the adapters train. Under
    gradient checkpointing the embeddings' outputs require grad, so that a checkpointed layer over
    a frozen base still has something to differentiate."""
    from peft import LoraConfig, get_peft_model

    arch = Architecture.from_config(policy.config.to_dict())
    targets = lora_targets(arch, config.target_modules, where="train.peft.target_modules")
    missing = [t for t in targets if not any(name.endswith(f".{t}") for name, _ in policy.named_modules())]
    if missing:
        raise HarnessError(f"train.peft.target_modules: the model has no module {missing[0]!r}; give modules it has "
                           "(or all-linear)")
    lora = LoraConfig(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=list(targets),
                      bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(policy, lora)
    if gradient_checkpointing:
        model.enable_input_require_grads()
    return model


class AdaptersDisabled(torch.nn.Module):
    """The reference of a LoRA run: the policy's forward with its adapters disabled, in eval mode."""

    def __init__(self, policy):
        super().__init__()
        self.policy = policy  # registered, so .parameters() sees the (shared) weights
        self.config = policy.config

    def forward(self, *args, **kwargs):
        was_training = self.policy.training
        self.policy.eval()
        try:
            with self.policy.disable_adapter():
                return self.policy(*args, **kwargs)
        finally:
            self.policy.train(was_training)


def merged(policy) -> torch.nn.Module:
    """The plain model with the trained adapters merged into its weights (for evaluation and
    vLLM, which take a plain causal LM)."""
    return policy.merge_and_unload() if hasattr(policy, "merge_and_unload") else policy


def is_adapted(model) -> bool:
    return hasattr(model, "disable_adapter") and hasattr(model, "peft_config")
