"""A plugin loss whose hyper-parameter has no default (tests/bad_inputs/plugin_no_default.yaml)."""

from harness.losses import LossInputs, LossOutput, register_loss


@register_loss("no_default_loss", needs=("reference",), reduction="sum", paper="none", formula="none")
def no_default_loss(inputs: LossInputs, *, beta: float) -> LossOutput:
    raise NotImplementedError  # never called: registration refuses it
