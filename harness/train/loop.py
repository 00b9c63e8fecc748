"""The one training loop. It knows a loss only through its spec (what it needs, its
hyper-parameters), never by name, and stops at the last step that fits the budget.

Regimes (harness.train.regimes) call it once per phase (a SPIN iteration, an sDPO stage) and may
hook into it after every optimizer step (TR-DPO's reference sync).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from harness.data.batches import Batch, TrainData
from harness.errors import HarnessError
from harness.logprobs import CompletionStats, completion_stats
from harness.models import enable_gradient_checkpointing
from harness.losses import LossSpec
from harness.needs import StepContext, loss_inputs_for, reference_runs_live
from harness.suite import Budget, TrainConfig
from harness.train import hardware
from harness.train.budget import Accounting, Forecast, StepCost, fits, forecast, step_amount
from harness.train.checkpoint import RunCheckpoint, rng_state, set_rng_state
from harness.train.data import epoch_batches
from harness.train.distributed import (all_finite, averaged, full_weights, is_main, load_optimizer_state, local_micro_batches,
                                       optimizer_state, wrap_for_training, write_back)
from harness.train.flops import ModelShape
from harness.train.hardware import peak_memory_mb, reset_peak_memory
from harness.train.optim import make_optimizer


class RunFailed(HarnessError):
    """A run stops for a reason found only while it trains: it is recorded as failed with the
    reason, and the suite goes on."""


class NonFiniteLoss(RunFailed):
    """A NaN or inf loss: the run stops and is recorded as failed with the step."""


class BudgetExhausted(RunFailed):
    """A phase whose share of the budget buys no step (SPIN's generation can spend an
    iteration's share before training; known only once it has generated)."""


def non_finite_message(loss: LossSpec, value: float, step: int) -> str:
    """What a NaN or inf loss means and what to try; names a plugin's file (its origin)."""
    where = "" if loss.origin == "built-in" else f"{loss.origin}: "
    return (f"{where}loss {loss.name!r} is {value} at step {step}; check its formula for log(0), division by zero "
            "or exp overflow (use logsigmoid, clamp), or lower train.lr")


@dataclass
class TrainResult:
    accounting: Accounting
    curve: list[dict[str, Any]] = field(default_factory=list)  # {"step", metric: value, ...}
    seconds: float = 0.0
    peak_memory_mb: float = math.nan
    refused_step: float = math.nan  # budget amount of the first step that did not fit


@dataclass
class TrainSetup:
    """Everything one phase of training needs besides the policy."""

    loss: LossSpec
    hparams: dict[str, Any]  # the loss's own hyper-parameters
    data: TrainData
    budget: Budget
    config: TrainConfig
    seed: int
    pad_id: int
    reference: torch.nn.Module | None = None
    reference_moves: bool = False  # a regime changes the reference: never read cached sums
    cached_reference: torch.Tensor | None = None  # (n_examples, groups) summed log-probs
    initial: Accounting = field(default_factory=Accounting)  # already spent in this phase (generation)
    step_offset: int = 0  # optimizer steps of earlier phases, so curves have one step axis
    on_log: Callable[[dict[str, Any]], None] | None = None  # each curve point, to the run's trackers (main process)
    after_step: Callable[[int], None] | None = None  # a regime's hook, given the phase's step
    progress: str | None = None  # a progress-bar label, or None for no bar
    log: Callable[[str], Any] | None = None  # gets the phase's budget forecast before it trains

    @property
    def live_reference(self) -> bool:
        return reference_runs_live(self.loss.needs, self.reference_moves)

    @property
    def kl_pairs(self) -> bool:
        return "kl_pairs" in self.loss.needs


@dataclass
class PhaseCheckpoint:
    """Where the loop saves, and what a resumed loop starts from (None: from scratch)."""

    store: RunCheckpoint
    save_extra: Callable[[], dict[str, Any]]  # the regime's own state, saved alongside
    resume: dict[str, Any] | None = None
    save_reference: bool = False  # the phase's reference is not the start model: save it too


def step_cost(batch: Batch, shape: ModelShape, setup: TrainSetup) -> StepCost:
    """One optimizer step's cost, from its sequences' lengths and the passes the loss needs."""
    lengths = batch.lengths()
    trained = batch.block(lengths, 0) if setup.kl_pairs else lengths
    forward_only = batch.block(lengths, 1) if setup.kl_pairs else lengths[:0]
    uses_reference = setup.loss.uses_reference
    return StepCost(
        examples=batch.size,
        policy_tokens=int(lengths.sum()),
        reference_tokens=int(lengths.sum()) if uses_reference else 0,
        flops_policy=shape.train_flops(trained) + shape.forward_flops(forward_only),
        flops_reference=shape.forward_flops(lengths) if uses_reference else 0.0,
        flops_recomputed=shape.recompute_flops(trained) if setup.config.gradient_checkpointing else 0.0,
    )


def forecast_phase(shape: ModelShape, setup: TrainSetup) -> Forecast:
    """The one estimate of a phase's optimizer steps and per-step cost, from a sample of up to
    eight full batches: it sizes the schedule, is printed before a run trains, and is
    `harness plan`'s estimate."""
    size = min(len(setup.data), setup.config.batch_size)
    sample = [setup.data.collate(list(range(i, i + size)), setup.pad_id, kl_pairs=setup.kl_pairs)
              for i in range(0, min(len(setup.data) - size + 1, 8 * size), size)]
    return forecast([step_cost(b, shape, setup) for b in sample], setup.budget, setup.initial)


def forward(policy, batch: Batch, setup: TrainSetup) -> tuple[CompletionStats, CompletionStats | None]:
    """The passes a loss needs: the trained block(s) with grad, KTO's mismatched block without."""
    reference = setup.reference if setup.live_reference else None
    wants_kl = "vocab_kl" in setup.loss.needs
    trained = (batch.block(batch.input_ids, 0), batch.block(batch.attention_mask, 0),
               batch.block(batch.completion_mask, 0)) if setup.kl_pairs else (
               batch.input_ids, batch.attention_mask, batch.completion_mask)
    packing = setup.config.packing
    stats = completion_stats(policy, *trained, reference=reference, vocab_kl=wants_kl, packing=packing,
                             collision="vocab_collision" in setup.loss.needs)
    kl_stats = None
    if setup.kl_pairs:
        with torch.no_grad():
            kl_stats = completion_stats(
                policy, batch.block(batch.input_ids, 1), batch.block(batch.attention_mask, 1),
                batch.block(batch.completion_mask, 1), reference=setup.reference, packing=packing,
            )
    return stats, kl_stats


def train_policy(policy: torch.nn.Module, setup: TrainSetup, checkpoint: PhaseCheckpoint | None = None) -> TrainResult:
    """Train `policy` in place until the next step would exceed the phase's budget."""
    torch.manual_seed(setup.seed)
    device = next(policy.parameters()).device
    if setup.config.gradient_checkpointing:
        enable_gradient_checkpointing(policy)
    shape = ModelShape.of(policy)
    plan = forecast_phase(shape, setup)
    total_steps = plan.steps
    if setup.log is not None and is_main():
        spent = setup.initial.used(setup.budget.kind)
        already = f" ({spent:.3g} spent before its first step)" if spent else ""
        setup.log(f"  {setup.progress or 'training'}: budget {setup.budget.kind}={setup.budget.value:.3g}{already}: "
                  f"{plan.describe()}")
    # DDP or FSDP under a multi-process launch, else `policy`
    trained = wrap_for_training(policy, setup.config.distributed.strategy)
    optimizer, scheduler = make_optimizer(trained, setup.config, total_steps)
    result = TrainResult(Accounting(**setup.initial.as_counts()))
    loss_state: dict[str, torch.Tensor] = {}
    resume = checkpoint.resume if checkpoint else None
    if resume:
        load_optimizer_state(trained, optimizer, resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        result.accounting = Accounting(**resume["accounting"])
        result.curve = list(resume["curve"])
        loss_state = dict(resume["loss_state"])
        set_rng_state(resume["rng"])
    reset_peak_memory(device)
    started = time.perf_counter() - (resume["seconds"] if resume else 0.0)
    policy.train()
    done = result.accounting.optimizer_steps - setup.initial.optimizer_steps
    # disable=None: shown on a terminal, hidden in logs (CI) where carriage returns are noise
    bar = tqdm(total=total_steps, initial=done, desc=setup.progress,
               disable=True if setup.progress is None else None, leave=False)
    for indices in epoch_batches(len(setup.data), setup.config.batch_size, setup.seed, skip=done):
        cost = step_cost(setup.data.collate(indices, setup.pad_id, kl_pairs=setup.kl_pairs), shape, setup)
        if not fits(result.accounting, cost, setup.budget):
            result.refused_step = step_amount(cost, setup.budget.kind)
            break
        done += 1
        metrics, logps = _optimizer_step(trained, optimizer, indices, setup, loss_state, device, done)
        scheduler.step()
        result.accounting.add(cost)
        bar.update(1)
        if setup.after_step is not None:
            setup.after_step(done)
        if done % setup.config.log_every == 0 or done == 1:
            result.curve.append(_curve_row(done + setup.step_offset, metrics, scheduler, result.accounting, setup.budget))
            if setup.on_log is not None and is_main():  # a tracker's point: the curve's and the policy's log-probs
                setup.on_log({**result.curve[-1], **logps})
        if checkpoint is not None and checkpoint.store.due(done):  # every process: FSDP gathers the state
            _save(checkpoint, trained, policy, setup, optimizer, scheduler, result, loss_state, started)
    bar.close()
    write_back(trained, policy)  # an FSDP copy's weights into the policy, on every process
    policy.eval()
    if done == 0:
        raise BudgetExhausted(
            f"budget {setup.budget.kind}={setup.budget.value:g} is smaller than one step; raise budget.value"
        )
    result.seconds = time.perf_counter() - started
    result.peak_memory_mb = peak_memory_mb(device)
    return result


def _save(checkpoint: PhaseCheckpoint, trained, policy, setup: TrainSetup, optimizer, scheduler,
          result: TrainResult, loss_state, started: float) -> None:
    """Called on every process (under FSDP the weights and optimizer state are gathered from all);
    the main process writes."""
    weights, optimizer_saved = full_weights(trained, policy), optimizer_state(trained, optimizer)
    if not is_main():
        return
    state = {
        "optimizer": optimizer_saved, "scheduler": scheduler.state_dict(),
        "accounting": result.accounting.as_counts(), "curve": result.curve, "loss_state": loss_state,
        "rng": rng_state(), "seconds": time.perf_counter() - started, **checkpoint.save_extra(),
    }
    checkpoint.store.save(weights, setup.reference if checkpoint.save_reference else None, state)


def _optimizer_step(policy, optimizer, indices: list[int], setup: TrainSetup,
                    loss_state: dict[str, torch.Tensor], device, step: int) -> tuple[dict[str, float], dict[str, float]]:
    """Forward, loss and backward over the micro-batches, then one clipped optimizer step. Returns
    the step's curve metrics and the policy's mean sequence log-probs (for trackers: TRL's
    logps/chosen and logps/rejected; not stored, so stored curves keep their rows)."""
    chunks = local_micro_batches(indices, setup.config.grad_accumulation)
    parts = len(chunks)  # this process's; the averaged gradients are the whole batch's mean
    sums: dict[str, float] = {}
    logps: dict[str, float] = {}
    for chunk in chunks:
        batch = setup.data.collate(chunk, setup.pad_id, kl_pairs=setup.kl_pairs).to(device)
        with hardware.autocast(device, setup.config.precision):
            stats, kl_stats = forward(policy, batch, setup)
        ctx = StepContext(batch, setup.data.shape, stats, kl_stats, setup.cached_reference, loss_state)
        inputs = loss_inputs_for(setup.loss.needs, ctx)
        out = setup.loss.fn(inputs, **setup.hparams)
        loss = out.losses.float().mean()
        if not all_finite(loss):
            raise NonFiniteLoss(non_finite_message(setup.loss, loss.item(), step))
        (loss / parts).backward()
        loss_state.update({k: v.detach() for k, v in out.state_updates.items()})
        for name, value in {"loss": loss, **out.metrics}.items():
            sums[name] = sums.get(name, 0.0) + value.detach().float().mean().item() / parts
        if setup.on_log is not None:
            for name in ("policy_chosen_logps", "policy_rejected_logps"):
                if getattr(inputs, name, None) is not None:
                    logps[name] = logps.get(name, 0.0) + getattr(inputs, name).detach().float().mean().item() / parts
    grad_norm = torch.nn.utils.clip_grad_norm_(policy.parameters(), setup.config.grad_clip)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    sums = averaged(sums)
    sums["grad_norm"] = float(grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm)
    return sums, logps


def _curve_row(step: int, metrics: dict[str, float], scheduler, accounting: Accounting, budget: Budget) -> dict[str, Any]:
    return {
        "step": step,
        **metrics,
        "lr": scheduler.get_last_lr()[0],
        "budget_used": accounting.used(budget.kind) / budget.value,
    }
