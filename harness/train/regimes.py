"""Regimes: the procedure around the one training loop, for methods that change the procedure
and not just the formula. A loss names its regime (`register_loss(..., regime=...)`); a regime's
keyword-only parameters are hyper-parameters given in the suite next to the loss's.

- standard: one pass of the loop against the frozen starting model.
- reference_sync (TR-DPO): the reference is updated every `sync_every` steps, softly
  (π_ref ← α πθ + (1 − α) π_ref in weight space) or hard (α = 1).
- stages (sDPO): the data's ordered stages one after another; the reference of stage t is the
  model after stage t − 1.
- spin_iterations (SPIN): each iteration generates the rejected responses with the current
  model on the SFT prompts, the SFT responses are the chosen ones, and the reference is the
  previous iterate; generation FLOPs come out of the budget.

The budget is shared equally by a regime's phases; each phase stops at its share.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from harness.data.batches import PairedData, TrainData
from harness.data.tokenize import encode_ids, encode_pair, prompt_ids
from harness.errors import HarnessError
from harness.generation import sample_completions
from harness.sampling import SamplingConfig
from harness.losses.base import Constraint, in_range, keyword_defaults, non_negative, positive, resolve_hparams
from harness.registry import Registry
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
    start_model: torch.nn.Module  # frozen
    setup: TrainSetup  # the standard setup: the whole budget, the start model as reference
    tokenizer: Any
    sft_rows: list[dict] | None = None  # SPIN's demonstrations (prompt, completion)
    checkpoint: RunCheckpoint | None = None


@dataclass(frozen=True)
class Regime:
    name: str
    fn: Callable[..., TrainResult]
    data: str | None = None  # the data shape the regime trains on, when it differs from the loss's
    constraints: dict[str, Constraint] = field(default_factory=dict)

    @property
    def hparams(self) -> dict[str, Any]:
        return keyword_defaults(self.fn)

    def resolve(self, given: dict[str, Any] | None, *, where: str = "") -> dict[str, Any]:
        return resolve_hparams(f"regime {self.name!r}", self.hparams, self.constraints, given, where=where)


REGIMES: Registry[Regime] = Registry("regime")


def register_regime(name: str, *, data: str | None = None, constraints: dict[str, Constraint] | None = None):
    return REGIMES.decorator(name, lambda fn: Regime(name, fn, data, dict(constraints or {})))


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


@register_regime("standard")
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


@register_regime("reference_sync", constraints={"sync_alpha": in_range(0.0, 1.0, low_open=True),
                                                 "sync_every": positive()})
def reference_sync(run: RegimeRun, *, sync_alpha: float = 0.6, sync_every: int = 512) -> TrainResult:
    """TR-DPO: every `sync_every` optimizer steps, π_ref ← α πθ + (1 − α) π_ref (α = 1: hard).
    Defaults are TRL's (ref_model_mixup_alpha 0.6, ref_model_sync_steps 512); the paper finds
    α ≈ 0.5–0.6 and τ ≈ 256–512 best at its scale; small sandbox runs need a smaller τ."""
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


@register_regime("stages", constraints={"stages": positive()})
def stages(run: RegimeRun, *, stages: int = 2) -> TrainResult:
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


@register_regime("spin_iterations", data="sft",
                 constraints={"iterations": positive(), "gen_temperature": in_range(0.0, 10.0, low_open=True),
                              "gen_top_k": non_negative(), "gen_top_p": in_range(0.0, 1.0, low_open=True),
                              "gen_max_new_tokens": positive()})
def spin_iterations(run: RegimeRun, *, iterations: int = 2, mix_previous: bool = False,
                    gen_max_new_tokens: int = 24, gen_temperature: float = 1.0, gen_top_k: int = 0,
                    gen_top_p: float = 1.0) -> TrainResult:
    """SPIN: iteration k generates y' ~ π_k for every SFT prompt, trains on (chosen = the SFT
    response, rejected = y') with π_k as the reference, and yields π_{k+1}. With mix_previous the
    previous iteration's generated pairs are trained on too (the paper's data mixing). The
    budget is split equally over the iterations; each pays for its own generation. gen_*: how
    y' is sampled (harness.sampling; the defaults draw from π_k itself, top-k and top-p off)."""
    if not run.sft_rows:
        raise HarnessError("regime 'spin_iterations' needs SFT demonstrations (prompt, completion)")
    tokenizer, pad_id, max_length = run.tokenizer, run.setup.pad_id, run.setup.config.max_length
    prompts = [r["prompt"] for r in run.sft_rows]
    chosen = [encode_pair(tokenizer, r["prompt"], r["completion"], max_length) for r in run.sft_rows]
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
            samples = sample_completions(reference, tokenizer, prompts, sampling)
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


def regime_data_shape(regime: Regime, loss) -> str:
    """The data a method trains on: the regime's if it says, else from the loss's declarations."""
    if regime.data:
        return regime.data
    if "segments" in loss.needs:
        return "sessions"
    return loss.data


def split_hparams(loss, regime: Regime, hparams: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A run's flat hyper-parameters into (the loss's, the regime's)."""
    loss_keys = set(loss.hparams)
    return ({k: v for k, v in hparams.items() if k in loss_keys},
            {k: v for k, v in hparams.items() if k not in loss_keys})


def resolve_method_hparams(loss, given: dict[str, Any] | None, *, where: str = "") -> dict[str, Any]:
    """Resolve a suite's hyper-parameters for a method: the loss's and its regime's together."""
    regime = REGIMES.get(loss.regime, where=f"loss {loss.name!r}")
    overlap = set(loss.hparams) & set(regime.hparams)
    if overlap:
        raise HarnessError(f"loss {loss.name!r} and regime {regime.name!r} both define {sorted(overlap)}")
    given = dict(given or {})
    loss_given = {k: v for k, v in given.items() if k in loss.hparams or k not in regime.hparams}
    regime_given = {k: v for k, v in given.items() if k in regime.hparams}
    return {**loss.resolve(loss_given, where=where), **regime.resolve(regime_given, where=where)}
