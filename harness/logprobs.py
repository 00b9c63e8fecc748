"""The only place where token log-probs, per-position KL and entropy are computed.

Conventions: `input_ids`, `attention_mask` and `completion_mask` are (B, T); position t of a
result holds the quantity for predicting token t from tokens < t, so it lines up with
`input_ids`. Position 0 is never a completion token. Outside the completion the result is 0.
Results are float32 whatever the model's dtype.

Memory. A causal LM's logits are (B, T, V): at B = 8, T = 1024, V = 32000 that is 1 GiB in
float32, and log_softmax, its gradient and the KL's second distribution each add as much again.
The main path (`completion_stats` and the functions built on it) therefore runs the model's body
once for the final hidden states, applies the LM head only at completion positions, and does so
`chunk_size` tokens at a time under activation checkpointing, so that only a few
(chunk_size, V) buffers are alive at once, in the forward *and* in the backward pass (B = 8,
T = 1024, V = 32000: about 0.6 GiB at peak instead of 3 GiB; benchmarks/logprob_memory.py).
This needs an HF-style causal LM (`base_model` + `get_output_embeddings()`), checked once per
model against its own forward; anything else (a DDP/FSDP wrapper, whose forward must not be
bypassed; a PEFT wrapper; a model that post-processes its logits, such as Gemma-2's
soft-capping) falls back to the full forward, with the same results and the old memory cost.

Speed. With `packing` (the default) the body runs once over the batch's packed layout
(harness.data.packing: a pair's shared prompt computed once, no padding) instead of the padded
batch, when the model reproduces its padded pass that way on a probe batch, checked once per model
and attention path. On CUDA the rows go through FlexAttention with a block-sparse mask
(harness.packed_attention: masked tiles skipped, grouped K/V not repeated); elsewhere through the
model's own SDPA or eager attention with a dense 4D mask (on CPU the faster of the two, and torch
has no FlexAttention backward there: FLEX_DEVICES). Either way positions are explicit and no sliding window
may be in play. A DDP/FSDP wrapper gets the packed rows through its own forward.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from harness import packed_attention
from harness.data.packing import PackedLayout, pack_batch, pack_sequences

DEFAULT_CHUNK_SIZE = 1024  # completion tokens per LM-head chunk: (1024, V) float32 logits at a time

# Config attributes of HF models whose logits are not just head(last_hidden_state).
_LOGIT_POSTPROCESSING = ("final_logit_softcapping", "logit_scale", "logits_scaling")


# ----------------------------------------------------------------------------------------------
# The original full-logits functions (kept for callers that need or already hold whole logits)


def _shifted_logits(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Logits (B, T, V) where position t predicts token t (position 0 is a dummy)."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits
    return torch.cat([logits[:, :1], logits[:, :-1]], dim=1)


def shifted_logits(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Public form of the aligned logits, for callers that need the whole distribution."""
    return _shifted_logits(model, input_ids, attention_mask)


def sequence_logps(token_logps: Tensor, completion_mask: Tensor) -> tuple[Tensor, Tensor]:
    """Summed completion log-probs (B,) and completion token counts (B,) as float."""
    return (token_logps * completion_mask).sum(-1), completion_mask.sum(-1).float()


def completion_kl(p_logits: Tensor, q_logits: Tensor, completion_mask: Tensor) -> Tensor:
    """KL(p ‖ q) = Σ_v p (log p − log q) per completion position: (B, T), from whole (B, T, V)
    logits; the expectation is under the first argument. KL(πθ ‖ π_ref), evaluation's KL, is
    `completion_kl(policy_logits, reference_logits, mask)`; TDPO's KL(π_ref ‖ πθ) swaps them
    (`completion_logps_and_vocab_kl` computes that one from the models without holding logits).
    """
    return _kl(p_logits, q_logits) * completion_mask


def completion_entropy(logits: Tensor, completion_mask: Tensor) -> Tensor:
    """Entropy of π(·|x,y<t) per completion position: (B, T), from whole (B, T, V) logits."""
    return _entropy(logits) * completion_mask


# ----------------------------------------------------------------------------------------------
# Per-row math on (..., V) logits; float32, log_softmax only


def _kl(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """KL(p ‖ q) = Σ_v p (log p − log q) over the last dimension, from logits.

    log_softmax on both sides: softmax().log() would give 0·(−inf) = NaN on underflow.
    """
    return _kl_from_logps(F.log_softmax(p_logits.float(), dim=-1), F.log_softmax(q_logits.float(), dim=-1))


def _kl_from_logps(p_logps: Tensor, q_logps: Tensor) -> Tensor:
    """KL(p ‖ q) over the last dimension, from log-probs."""
    return (p_logps.exp() * (p_logps - q_logps)).sum(-1)


def _entropy(logits: Tensor) -> Tensor:
    """−Σ_v p log p over the last dimension, from logits."""
    return _entropy_from_logps(F.log_softmax(logits.float(), dim=-1))


def _entropy_from_logps(logps: Tensor) -> Tensor:
    return -(logps.exp() * logps).sum(-1)


def token_logps_from_logits(logits: Tensor, targets: Tensor) -> Tensor:
    """log p(target) per row: logit[target] − logsumexp, without a second (n, V) tensor."""
    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


# ----------------------------------------------------------------------------------------------
# From a model to the hidden state (or, in the fallback, the logits) at each completion position


_HIDDEN_PATH_OK: weakref.WeakKeyDictionary[torch.nn.Module, bool] = weakref.WeakKeyDictionary()


def _trunk_and_head(model: torch.nn.Module) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(body, LM head) of an HF causal LM, or None when the model is not one (structurally)."""
    trunk = getattr(model, "base_model", None)
    get_head = getattr(model, "get_output_embeddings", None)
    if trunk is None or trunk is model or get_head is None:
        return None
    head = get_head()
    config = getattr(model, "config", None)
    if head is None or any(getattr(config, name, None) for name in _LOGIT_POSTPROCESSING):
        return None
    return trunk, head


def _final_hidden(trunk: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Last hidden state (B, T, H), after the final norm; no KV cache (it would only cost memory)."""
    out = trunk(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    return out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]


@torch.no_grad()
def _hidden_path_matches(model: torch.nn.Module, trunk, head, input_ids, attention_mask) -> bool:
    """Whether head(body(x)) reproduces model(x).logits, on a short slice, in eval mode (no dropout)."""
    ids = input_ids[:1, :8]
    mask = torch.ones_like(ids)  # a real row may start with padding, which some models turn to NaN
    was_training = model.training
    model.eval()
    try:
        expected = model(input_ids=ids, attention_mask=mask).logits.float()
        got = head(_final_hidden(trunk, ids, mask)).float()
        return got.shape == expected.shape and torch.allclose(got, expected, rtol=1e-4, atol=1e-5)
    except Exception:  # any surprise from an unusual model means: use the full forward
        return False
    finally:
        model.train(was_training)


def _hidden_path(model, input_ids, attention_mask) -> tuple[torch.nn.Module, torch.nn.Module] | None:
    """(body, head) when the memory-efficient path is valid for this model (checked once per model)."""
    parts = _trunk_and_head(model)
    if parts is None:
        return None
    if model not in _HIDDEN_PATH_OK:
        _HIDDEN_PATH_OK[model] = _hidden_path_matches(model, *parts, input_ids, attention_mask)
    return parts if _HIDDEN_PATH_OK[model] else None


def _identity(x: Tensor) -> Tensor:
    return x


# ----------------------------------------------------------------------------------------------
# The packed body pass (harness.data.packing): shared prompts once, no padding

# Per model and attention path ("flex" or "dense"): why its packed pass is refused, None if it packs.
_PACKING_VERDICT: weakref.WeakKeyDictionary[torch.nn.Module, dict[str, str | None]] = weakref.WeakKeyDictionary()

# Devices whose packed rows go through FlexAttention (harness.packed_attention); the others take the
# dense 4D mask. Not the CPU: there flex_attention runs only as an eager reference that materializes
# every score, forward only (no backward), and its no-grad packed forward measured 3-7x slower than
# the dense mask's (benchmarks/train_throughput.py's default model and batches, 1 thread, 2026-12-08).
FLEX_DEVICES = frozenset({"cuda"})


def _has_windowed_attention(config) -> bool:
    """Sliding-window layers build their own mask, which a custom 4D mask would replace."""
    types = getattr(config, "layer_types", None)
    if types:
        return any(kind != "full_attention" for kind in types)
    return bool(getattr(config, "sliding_window", None)) and bool(getattr(config, "use_sliding_window", True))


def _packed_mask(model: torch.nn.Module, attends: Tensor) -> Tensor | None:
    """The 4D mask (R, 1, C, C) in the form the model's attention takes, or None if it takes none:
    SDPA reads a boolean mask; eager attention adds the mask to its scores."""
    implementation = getattr(model.config, "_attn_implementation", None)
    if implementation == "sdpa":
        return attends[:, None]
    if implementation == "eager":
        blocked = torch.finfo(torch.float32).min
        return torch.zeros(attends[:, None].shape, device=attends.device).masked_fill(~attends[:, None], blocked)
    return None


def _attention_path(model: torch.nn.Module) -> str:
    """How `model`'s packed rows reach its attention: "flex" (a BlockMask) or "dense" (a 4D mask)."""
    parameter = next(model.parameters(), None)
    return "flex" if parameter is not None and parameter.device.type in FLEX_DEVICES else "dense"


def _packed_inputs(model: torch.nn.Module, layout: PackedLayout):
    """(rows, attention mask, context to run the forward in) for the packed rows on `model`'s path.
    FlexAttention's rows are padded to whole tiles; the caller cuts its output back to the
    layout's width, where `layout.index` reads it."""
    if _attention_path(model) == "flex":
        wide = layout.padded_to(packed_attention.BLOCK)
        mask = packed_attention.block_mask(wide, packed_attention.BLOCK)
        return wide, mask, packed_attention.flex_implementation(model)
    return layout, _packed_mask(model, layout.attends()), contextlib.nullcontext()


def _packed_hidden(model: torch.nn.Module, trunk: torch.nn.Module, layout: PackedLayout) -> Tensor:
    """Last hidden states of the packed rows, flattened to (R·C, H) so `layout.index` reads them."""
    rows, mask, attention = _packed_inputs(model, layout)
    with attention:
        out = trunk(input_ids=rows.input_ids, attention_mask=mask, position_ids=rows.position_ids, use_cache=False)
    hidden = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
    return hidden[:, : layout.input_ids.shape[1]].flatten(0, 1)


def _probe_batch(model: torch.nn.Module, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """Four sequences: two share a 3-token prompt and branch (one tree, one row); two short ones
    under other prompts, which share a row with a block-diagonal mask."""
    x = ((torch.arange(1, 7) * 7) % model.config.vocab_size).tolist()
    rows = [x, x[:3] + [x[5], x[4]], x[:2], x[1:4]]
    ids = torch.zeros((4, 6), dtype=torch.long)
    mask = torch.zeros((4, 6), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)], mask[i, : len(row)] = torch.tensor(row), 1
    completion = torch.zeros((4, 6), dtype=torch.bool)
    completion[:2, 3:] = mask[:2, 3:].bool()
    return ids.to(device), mask.to(device), completion.to(device)


def packing_refusal(model: torch.nn.Module) -> str | None:
    """Why the packed pass is refused for `model` (None: it packs), checked once per model and
    attention path (that of the device it is on); the reason is printed (a warning) the first time."""
    model = _unwrapped(model)
    verdicts = _PACKING_VERDICT.setdefault(model, {})
    path = _attention_path(model)
    if path not in verdicts:
        verdicts[path] = reason = _packing_problem(model)
        if reason is not None:
            warnings.warn(f"train.packing: {type(model).__name__} keeps the padded batch: {reason}", stacklevel=2)
    return verdicts[path]


@torch.no_grad()
def _packing_problem(model: torch.nn.Module) -> str | None:
    """What stops the packed pass from reproducing the padded one for `model`, or None."""
    trunk = getattr(model, "base_model", None)
    if trunk is None or trunk is model or getattr(model, "get_output_embeddings", None) is None:
        return f"{type(model).__name__} is not an HF-style causal LM (no base model and output embeddings)"
    post = [name for name in _LOGIT_POSTPROCESSING if getattr(model.config, name, None)]
    if post:
        return f"it post-processes its logits ({', '.join(post)}), so its own full forward runs, padded"
    if _has_windowed_attention(model.config):
        return "sliding-window attention layers build their own mask, which the packed 4D mask would replace"
    path = _attention_path(model)
    implementation = getattr(model.config, "_attn_implementation", None)
    if path == "dense" and _packed_mask(model, torch.ones(1, 1, 1, dtype=torch.bool)) is None:
        return f"its attention ({implementation}) takes no custom 4D mask (sdpa or eager do)"
    if path == "flex" and getattr(model.config, "attention_dropout", 0.0):
        return "its attention dropout has no FlexAttention form"
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.autocast(device.type, enabled=False):
            ids, mask, completion = _probe_batch(model, device)
            layout = pack_sequences(ids, mask, completion, share_prompts=True)
            calls = packed_attention.calls
            expected = _final_hidden(trunk, ids, mask)[mask.bool()].float()
            got = _packed_hidden(model, trunk, layout)[layout.index[mask.bool()]].float()
            if path == "flex" and packed_attention.calls == calls:
                return f"its attention ({implementation}) does not dispatch through transformers' AttentionInterface"
            tolerance = 1e-4 if next(model.parameters()).dtype == torch.float32 else 2e-2
            if not _close(got, expected, tolerance):
                return f"its packed pass ({path} attention) does not reproduce its padded pass on a probe batch"
            if path == "flex" and device.type != "cpu" and any(p.requires_grad for p in model.parameters()):
                got, expected = _probe_input_gradients(model, trunk, ids, mask, layout)
                if not _close(got, expected, tolerance):
                    return "its packed backward (flex attention) does not reproduce its padded one on a probe batch"
        return None
    except Exception as err:  # any surprise from an unusual model means: keep the padded batch
        return f"its packed pass ({path} attention) fails on a probe batch ({type(err).__name__})"
    finally:
        model.train(was_training)


def _close(got: Tensor, expected: Tensor, tolerance: float) -> bool:
    return torch.allclose(got, expected, rtol=tolerance, atol=tolerance * expected.abs().max().item())


def _probe_input_gradients(model, trunk, ids: Tensor, mask: Tensor, layout: PackedLayout) -> tuple[Tensor, Tensor]:
    """(packed, padded) gradients of a fixed weighting of the probe's hidden states w.r.t. the input
    embeddings, per slot of the layout (a shared slot gathers its sequences' gradients). The
    backward is where a compiled FlexAttention kernel would first be built, so it is tried here,
    where a failure keeps the padded batch, rather than in the first training step. No weight
    gets a gradient (the embeddings are made leaves)."""
    real = mask.bool()
    leaves: list[Tensor] = []

    def as_leaf(_module, _inputs, output):
        leaves.append(output.detach().float().requires_grad_())
        return leaves[-1].to(output.dtype)

    def gradient(hidden_rows: Callable[[], Tensor]) -> Tensor:
        leaves.clear()
        handle = model.get_input_embeddings().register_forward_hook(as_leaf)
        try:
            with torch.enable_grad():
                rows = hidden_rows().float()
                weights = torch.linspace(-1, 1, rows.numel(), device=rows.device).view_as(rows)
                return torch.autograd.grad((rows * weights).sum(), leaves[0])[0]
        finally:
            handle.remove()

    padded = gradient(lambda: _final_hidden(trunk, ids, mask)[real])
    packed = gradient(lambda: _packed_hidden(model, trunk, layout)[layout.index[real]])
    width = layout.input_ids.shape[1]
    got = packed[:, :width].flatten(0, 1)
    expected = torch.zeros_like(got).index_add_(0, layout.index[real], padded[real])
    return got, expected


def _uses_packing(model: torch.nn.Module, layout: PackedLayout | None) -> bool:
    return layout is not None and packing_refusal(model) is None


def _unwrapped(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DDP/FSDP wrapper (which holds it as `.module`), else the model."""
    inner = getattr(model, "module", None)
    return inner if isinstance(inner, torch.nn.Module) and not hasattr(model, "config") else model


def _logits_rows(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor,
                 rows: tuple[Tensor, Tensor], layout: PackedLayout | None) -> Tensor:
    """The fallback: whole logits from the model's own forward, read at `rows` (batch, position).

    A DDP/FSDP wrapper must run its own forward (it synchronizes gradients there), so the
    memory-efficient head is not available; the packed rows still are, through the wrapper's
    forward, when the model inside handles them.
    """
    inner = _unwrapped(model)
    parts = _trunk_and_head(inner) if inner is not model else None
    if parts is not None and _uses_packing(inner, layout):
        packed, mask, attention = _packed_inputs(inner, layout)
        with attention:
            logits = model(input_ids=packed.input_ids, attention_mask=mask, position_ids=packed.position_ids).logits
        return logits[:, : layout.input_ids.shape[1]].flatten(0, 1)[layout.index[rows]]
    return model(input_ids=input_ids, attention_mask=attention_mask).logits[rows]


def _layout(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor,
            completion_mask: Tensor) -> PackedLayout | None:
    """The batch's packed layout when it is cheaper than the padded batch for this model's width
    (None without building one for a model already known not to take packed rows)."""
    inner = _unwrapped(model)
    hidden_size = getattr(getattr(inner, "config", None), "hidden_size", None)
    if not isinstance(hidden_size, int) or packing_refusal(inner) is not None:
        return None
    return pack_batch(input_ids, attention_mask, completion_mask, hidden_size=hidden_size)


def _completion_rows(
    model: torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    positions: tuple[Tensor, Tensor],
    layout: PackedLayout | None = None,
) -> tuple[Tensor, Callable[[Tensor], Tensor]]:
    """Rows (N, H) to feed the head, and the head, for the N completion positions.

    Row n is the state that predicts token t_n: the hidden state at t_n − 1 (clamped at 0, which
    is what the full-logits path's dummy position 0 does). With a packed `layout` that this model
    handles, the body runs on the packed rows instead of the padded batch. In the fallback the
    rows are already logits (N, V) and the head is the identity.
    """
    batch_idx, token_idx = positions
    previous = (token_idx - 1).clamp(min=0)
    parts = _hidden_path(model, input_ids, attention_mask)
    if parts is None:
        return _logits_rows(model, input_ids, attention_mask, (batch_idx, previous), layout), _identity
    trunk, head = parts
    if _uses_packing(model, layout):
        return _packed_hidden(model, trunk, layout)[layout.index[batch_idx, previous]], head
    return _final_hidden(trunk, input_ids, attention_mask)[batch_idx, previous], head


# ----------------------------------------------------------------------------------------------
# The chunked pass


@dataclass(frozen=True)
class CompletionStats:
    """Per-position quantities (B, T), float32, 0 outside the completion.

    policy_token_logps: log πθ(y_t | x, y<t), differentiable.
    reference_token_logps: log π_ref(y_t | x, y<t), no grad (None without a reference).
    vocab_kl: KL(π_ref(·|x,y<t) ‖ πθ(·|x,y<t)) over the vocabulary, differentiable w.r.t. the
        policy (None unless asked).
    entropy: entropy of πθ(·|x,y<t), differentiable (None unless asked).
    log_collision: log Σ_v πθ(v|x,y<t)², the log-probability that two draws from the policy at
        that position agree (WPO's alignment term), no grad (None unless asked).
    """

    policy_token_logps: Tensor
    reference_token_logps: Tensor | None = None
    vocab_kl: Tensor | None = None
    entropy: Tensor | None = None
    log_collision: Tensor | None = None


def _chunk_stats(
    policy_rows: Tensor,
    reference_rows: Tensor | None,
    targets: Tensor,
    *,
    policy_head: Callable[[Tensor], Tensor],
    reference_head: Callable[[Tensor], Tensor] | None,
    want_kl: bool,
    want_entropy: bool,
    want_collision: bool = False,
) -> tuple[Tensor, ...]:
    """Stats for one chunk of n rows: (policy logps, [reference logps], [KL], [entropy],
    [log collision]), each (n,).

    Runs under checkpoint, so its (n, V) intermediates are freed after the forward and recomputed
    in the backward. The reference head runs without grad: its weights must get none, even if
    the caller left them trainable.
    """
    policy_logits = policy_head(policy_rows).float()
    if not (want_kl or want_entropy or want_collision):  # the common case needs no (n, V) log_softmax at all
        policy_logps = None
        out = [token_logps_from_logits(policy_logits, targets)]
    else:
        policy_logps = F.log_softmax(policy_logits, dim=-1)
        out = [policy_logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1)]
    if reference_rows is not None:
        with torch.no_grad():
            reference_logps = F.log_softmax(reference_head(reference_rows).float(), dim=-1)
            out.append(reference_logps.gather(-1, targets.unsqueeze(-1)).squeeze(-1))
        if want_kl:
            out.append(_kl_from_logps(reference_logps, policy_logps))  # KL(π_ref ‖ πθ), TDPO's
    if want_entropy:
        out.append(_entropy_from_logps(policy_logps))
    if want_collision:
        with torch.no_grad():  # a weight, never differentiated
            out.append(torch.logsumexp(2.0 * policy_logps, dim=-1))
    return tuple(out)


def completion_stats(
    policy: torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    *,
    reference: torch.nn.Module | None = None,
    vocab_kl: bool = False,
    entropy: bool = False,
    collision: bool = False,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    packing: bool = True,
) -> CompletionStats:
    """Token log-probs of the policy (and of the reference, and the per-position KL and entropy
    when asked) at completion positions, in one body pass per model and a chunked head pass.

    Shapes: inputs (B, T); every result (B, T) float32. The reference runs under no_grad.
    `packing`: run the bodies on the batch's packed layout (harness.data.packing: shared prompts
    once, no padding) where the model supports it; the results are the same up to float rounding.
    """
    if vocab_kl and reference is None:
        raise ValueError("vocab_kl needs a reference model")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    # the planes _chunk_stats returns, in its order
    wanted = {
        "policy_token_logps": True,
        "reference_token_logps": reference is not None,
        "vocab_kl": vocab_kl,
        "entropy": entropy,
        "log_collision": collision,
    }
    names = [name for name, want in wanted.items() if want]
    positions = completion_mask.nonzero(as_tuple=True)
    targets = input_ids[positions]
    layout = _layout(policy, input_ids, attention_mask, completion_mask) if packing else None
    policy_rows, policy_head = _completion_rows(policy, input_ids, attention_mask, positions, layout)
    reference_rows, reference_head = None, None
    if reference is not None:
        with torch.no_grad():
            reference_rows, reference_head = _completion_rows(
                reference, input_ids, attention_mask, positions, layout
            )
    fn = functools.partial(
        _chunk_stats,
        policy_head=policy_head,
        reference_head=reference_head,
        want_kl=vocab_kl,
        want_entropy=entropy,
        want_collision=collision,
    )
    # Without grad there is no backward to save memory for, so no checkpoint.
    use_checkpoint = torch.is_grad_enabled() and policy_rows.requires_grad
    chunks = []
    for start in range(0, targets.numel(), chunk_size):
        rows = slice(start, start + chunk_size)
        reference_chunk = None if reference_rows is None else reference_rows[rows]
        args = (policy_rows[rows], reference_chunk, targets[rows])
        chunks.append(checkpoint(fn, *args, use_reentrant=False) if use_checkpoint else fn(*args))
    if chunks:
        columns = [torch.cat(column) for column in zip(*chunks)]
    else:  # no completion token anywhere in the batch
        columns = [policy_rows.new_zeros(0, dtype=torch.float32)] * len(names)
    zeros = torch.zeros(completion_mask.shape, dtype=torch.float32, device=policy_rows.device)
    return CompletionStats(
        **{name: zeros.index_put(positions, column) for name, column in zip(names, columns)}
    )


def completion_token_logps(
    model: torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    packing: bool = True,
) -> Tensor:
    """log π(y_t | x, y<t) at completion positions, 0 elsewhere: (B, T), float32."""
    return completion_stats(
        model, input_ids, attention_mask, completion_mask, chunk_size=chunk_size, packing=packing
    ).policy_token_logps


def completion_logps_and_vocab_kl(
    policy: torch.nn.Module,
    reference: torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    completion_mask: Tensor,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[Tensor, Tensor, Tensor]:
    """(policy_token_logps, reference_token_logps, vocab_kl), each (B, T) float32, in one pass.

    What TDPO needs: the per-position KL(π_ref ‖ πθ) over the full vocabulary (differentiable
    w.r.t. the policy) next to both models' token log-probs. The reference runs under no_grad.
    """
    stats = completion_stats(
        policy,
        input_ids,
        attention_mask,
        completion_mask,
        reference=reference,
        vocab_kl=True,
        chunk_size=chunk_size,
    )
    return stats.policy_token_logps, stats.reference_token_logps, stats.vocab_kl
