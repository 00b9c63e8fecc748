"""Regimes: the procedures around the one training loop, for methods that change the procedure
and not just the formula. Their names, hyper-parameters (defaults, constraints) and own data are
declared in harness.losses.regimes; each procedure here implements one declared name and takes
exactly its declared hyper-parameters, resolved, as keyword arguments.

The budget is shared equally by a regime's phases; each phase stops at its share.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch

from harness.data.batches import PairedData
from harness.data.tokenize import encode_ids, encode_pair, prompt_ids
from harness.errors import HarnessError
from harness.generation import sample_completions
from harness.losses.regimes import REGIMES
from harness.registry import Registry
from harness.sampling import SamplingConfig
from harness.suite import Budget
from harness.train.budget import Accounting
from harness.train.checkpoint import RunCheckpoint, load_weights
from harness.train.flops import ModelShape
from harness.train.loop import PhaseCheckpoint, TrainResult, TrainSetup, train_policy
from harness.train.reference import reference_sums


@dataclass
class RegimeRun:
    """What a regime gets: the policy to train, the start model, the data and the run's settings."""

    policy: torch.nn.Module
    start_model: torch.nn.Module | None  # frozen; None for the standard regime, which reads only setup.reference
    setup: TrainSetup  # the standard setup: the whole budget, the start model as reference
    tokenizer: Any
    rows: list[dict] | None = None  # the rows the regime declared it reads (SPIN: SFT demonstrations)
    checkpoint: RunCheckpoint | None = None
    generation_backend: str = "transformers"  # how regimes that generate sample (the suite's evaluate.backend)


Procedure = Callable[..., TrainResult]
PROCEDURES: Registry[Procedure] = Registry("regime procedure")


def implements(name: str) -> Callable[[Procedure], Procedure]:
    """Register the procedure of the declared regime `name`; its keyword-only parameters must be
    the declaration's hyper-parameters (their defaults live in the declaration only)."""
    declared = set(REGIMES.get(name).hparams)

    def wrap(fn: Procedure) -> Procedure:
        params = inspect.signature(fn).parameters.values()
        taken = {p.name for p in params if p.kind is p.KEYWORD_ONLY}
        if taken != declared:
            raise HarnessError(f"regime {name!r}: the procedure takes {sorted(taken)}, the declaration {sorted(declared)}")
        PROCEDURES.add(name, fn)
        return fn

    return wrap


def run_regime(name: str, run: RegimeRun, hparams: dict[str, Any]) -> TrainResult:
    """Train with the regime `name` and its resolved hyper-parameters."""
    return PROCEDURES.get(name)(run, **hparams)


def _combine(results: list[TrainResult]) -> TrainResult:
    total = Accounting()
    for r in results:
        total = total.plus(r.accounting)
    return TrainResult(
        accounting=total,
        curve=[row for r in results for row in r.curve],
        seconds=sum(r.seconds for r in results),
        peak_memory_mb=max(r.peak_memory_mb for r in results),
    )


def _phase_budget(budget: Budget, phases: int) -> Budget:
    return replace(budget, value=budget.value / phases)


def _resume_state(run: RegimeRun) -> dict[str, Any] | None:
    return run.checkpoint.load() if run.checkpoint else None


def _phase_checkpoint(run: RegimeRun, resume, phase: int, done: list[TrainResult], extra: dict, *,
                      save_reference: bool) -> PhaseCheckpoint | None:
    """The loop's checkpoint hook for `phase`: saves the phases done so far and the regime's data."""
    if run.checkpoint is None:
        return None
    state = {"phase": phase, "done": [_result_state(r) for r in done], **extra}
    mine = resume if resume and resume["phase"] == phase else None
    return PhaseCheckpoint(run.checkpoint, lambda: state, mine, save_reference)


def _result_state(result: TrainResult) -> dict[str, Any]:
    return {"accounting": result.accounting.as_counts(), "curve": result.curve,
            "seconds": result.seconds, "peak_memory_mb": result.peak_memory_mb}


def _result_from_state(state: dict[str, Any]) -> TrainResult:
    return TrainResult(Accounting(**state["accounting"]), state["curve"], state["seconds"], state["peak_memory_mb"])


@implements("standard")
def standard(run: RegimeRun) -> TrainResult:
    """One pass of the loop; the reference is the frozen start model (cached sums where possible)."""
    resume = _resume_state(run)
    if resume:
        load_weights(run.policy, resume["policy"])
    return train_policy(run.policy, run.setup, _phase_checkpoint(run, resume, 0, [], {}, save_reference=False))


def _soft_update(reference: torch.nn.Module, policy: torch.nn.Module, alpha: float) -> None:
    with torch.no_grad():
        for ref_param, param in zip(reference.parameters(), policy.parameters()):
            ref_param.mul_(1.0 - alpha).add_(param.detach(), alpha=alpha)


@implements("reference_sync")
def reference_sync(run: RegimeRun, *, sync_alpha: float, sync_every: int) -> TrainResult:
    """TR-DPO: every `sync_every` optimizer steps, π_ref ← α πθ + (1 − α) π_ref (α = 1: hard)."""
    resume = _resume_state(run)
    reference = copy.deepcopy(run.start_model)
    if resume:
        load_weights(run.policy, resume["policy"])
        load_weights(reference, resume["reference"])

    def sync(step: int) -> None:
        if step % sync_every == 0:
            _soft_update(reference, run.policy, sync_alpha)

    setup = replace(run.setup, reference=reference, reference_moves=True, cached_reference=None, after_step=sync)
    return train_policy(run.policy, setup, _phase_checkpoint(run, resume, 0, [], {}, save_reference=True))


def _frozen(model: torch.nn.Module) -> torch.nn.Module:
    out = copy.deepcopy(model)
    out.eval()
    out.requires_grad_(False)
    return out


def _enter_phase(run: RegimeRun, resume: dict[str, Any] | None, phase: int) -> torch.nn.Module:
    """Restore a resumed phase's weights, and return the phase's reference: the start model in
    phase 0, else the policy as it enters the phase (the previous phase's result)."""
    mine = resume is not None and resume["phase"] == phase
    if mine:
        load_weights(run.policy, resume["policy"])
    reference = run.start_model if phase == 0 else _frozen(run.policy)
    if mine and resume["reference"] is not None:
        load_weights(reference, resume["reference"])
    return reference


@implements("stages")
def stages(run: RegimeRun, *, stages: int) -> TrainResult:
    """sDPO: train on the data's stages in order (the data's `stage` column, easy to hard); the
    reference of stage t is the model after stage t − 1; each stage gets 1/stages of the budget."""
    data = run.setup.data
    if not isinstance(data, PairedData) or data.stages is None:
        raise HarnessError("regime 'stages' needs paired data with a 'stage' column (the sandbox's pairs have one)")
    present = sorted(set(data.stages))
    if len(present) < stages:
        raise HarnessError(f"regime 'stages': stages={stages} but the data has {len(present)} stages {present}")
    groups = [[i for i, s in enumerate(data.stages) if s == stage] for stage in present[:stages]]
    resume = _resume_state(run)
    done = [_result_from_state(s) for s in resume["done"]] if resume else []
    for stage, indices in enumerate(groups):
        if stage < len(done):
            continue
        reference = _enter_phase(run, resume, stage)
        stage_data = data.subset(indices)
        cached = None
        if run.setup.loss.uses_reference and not run.setup.live_reference:
            cached = run.setup.cached_reference[torch.tensor(indices)] if stage == 0 else reference_sums(
                reference, stage_data, pad_id=run.setup.pad_id, packing=run.setup.config.packing)
        setup = replace(
            run.setup, data=stage_data, reference=reference, cached_reference=cached,
            budget=_phase_budget(run.setup.budget, stages), seed=run.setup.seed + stage,
            step_offset=sum(r.accounting.optimizer_steps for r in done),
            progress=run.setup.progress and f"{run.setup.progress} (stage {stage + 1}/{stages})",
        )
        hook = _phase_checkpoint(run, resume, stage, done, {}, save_reference=stage > 0)
        done.append(train_policy(run.policy, setup, hook))
    return _combine(done)


@implements("spin_iterations")
def spin_iterations(run: RegimeRun, *, iterations: int, mix_previous: bool, gen_max_new_tokens: int,
                    gen_temperature: float, gen_top_k: int, gen_top_p: float) -> TrainResult:
    """SPIN: iteration k generates y' ~ π_k for every SFT prompt, trains on (chosen = the SFT
    response, rejected = y') with π_k as the reference, and yields π_{k+1}. With mix_previous the
    previous iteration's generated pairs are trained on too (the paper's data mixing). The
    budget is split equally over the iterations; each pays for its own generation. gen_*: how
    y' is sampled (harness.sampling; the defaults draw from π_k itself, top-k and top-p off)."""
    if not run.rows:
        raise HarnessError("regime 'spin_iterations' needs SFT demonstrations (prompt, completion)")
    tokenizer, pad_id, max_length = run.tokenizer, run.setup.pad_id, run.setup.config.max_length
    prompts = [r["prompt"] for r in run.rows]
    chosen = [encode_pair(tokenizer, r["prompt"], r["completion"], max_length) for r in run.rows]
    shape = ModelShape.of(run.policy)
    resume = _resume_state(run)
    done = [_result_from_state(s) for s in resume["done"]] if resume else []
    generated: list[list[list[int]]] = resume["generated"] if resume else []
    for k in range(iterations):
        if k < len(done):
            continue
        reference = _enter_phase(run, resume, k)
        budget = _phase_budget(run.setup.budget, iterations)
        initial = Accounting()
        if len(generated) <= k:  # generate with π_k (= the reference) unless resumed after it
            sampling = SamplingConfig(n=1, max_new_tokens=gen_max_new_tokens, temperature=gen_temperature,
                                      top_k=gen_top_k, top_p=gen_top_p, seed=run.setup.seed * 1000 + k)
            samples = sample_completions(reference, tokenizer, prompts, sampling, backend=run.generation_backend)
            generated.append([list(s.token_ids) for s in samples])
        prompt_lengths = [len(prompt_ids(tokenizer, p)) for p in prompts]
        new_tokens = [len(ids) for ids in generated[k]]
        initial.generated_tokens = sum(new_tokens)
        initial.flops_generation = shape.generation_flops(prompt_lengths, new_tokens)
        data = _spin_pairs(chosen, prompts, generated, k, mix_previous, tokenizer, max_length)
        cached = (reference_sums(reference, data, pad_id=pad_id, packing=run.setup.config.packing)
                  if not run.setup.live_reference else None)
        setup = replace(
            run.setup, data=data, reference=reference, cached_reference=cached, budget=budget,
            initial=initial, seed=run.setup.seed + k,
            step_offset=sum(r.accounting.optimizer_steps for r in done),
            progress=run.setup.progress and f"{run.setup.progress} (iteration {k + 1}/{iterations})",
        )
        hook = _phase_checkpoint(run, resume, k, done, {"generated": generated}, save_reference=k > 0)
        done.append(train_policy(run.policy, setup, hook))
    return _combine(done)


def _spin_pairs(chosen, prompts, generated, k, mix_previous, tokenizer, max_length) -> PairedData:
    """Pairs (SFT response, generated response) of iteration k, plus k−1's when mixing."""
    iterations = [k - 1, k] if mix_previous and k > 0 else [k]
    chosen_rows, rejected_rows = [], []
    for it in iterations:
        for i, prompt in enumerate(prompts):
            head = prompt_ids(tokenizer, prompt)
            tail = generated[it][i][: max(max_length - len(head), 0)]
            chosen_rows.append(chosen[i])
            rejected_rows.append(encode_ids(head, tail))
    return PairedData(chosen_rows, rejected_rows)
