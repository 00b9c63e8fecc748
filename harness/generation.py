"""Sampling completions from a causal LM: shared by the sandbox (preference pairs), training
regimes that generate (SPIN) and evaluation. One interface, two backends:

- "transformers": `model.generate` on the in-memory model, batched, KV-cached, seeded;
- "vllm": a vLLM engine over a snapshot of the same model (used when vLLM is importable and a
  CUDA GPU is present; `pip install "harness[vllm]"`).

`resolve_backend` is the one place that turns a suite's `evaluate.backend` ("auto",
"transformers", "vllm") into the backend that runs. Both return the same `Completion`s: prompt
order, `n` samples per prompt, token ids up to and including the first EOS, and (when asked)
the per-token log-probs of the sampled tokens under the model itself (temperature 1, no top-p:
log π(y_t | x, y<t), the quantity every KL and reward estimate uses, not the sampling
distribution's).

Every sampling parameter is explicit (`SamplingConfig`) and the defaults draw from the model's
own, untruncated distribution: temperature 1, top_k 0 (off), top_p 1. Both backends get the same
parameters: `generation_config` for transformers (whose own default top_k of 50 would otherwise
apply) and `harness.sampling.vllm_sampling_kwargs` for vLLM.
"""

from __future__ import annotations

import gc
import importlib.util
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from harness.data.tokenize import encode_ids, encode_prompts, pad_right, prompt_ids
from harness.errors import HarnessError
from harness.sampling import SamplingConfig, vllm_sampling_kwargs

BACKENDS = ("auto", "transformers", "vllm")


@dataclass(frozen=True)
class Completion:
    """One sampled completion: its text, and its token ids including the EOS when one was
    produced (a sample cut at max_new_tokens has none), as scored by log-prob evaluations.
    token_logps: log π(token_t | prompt, tokens<t) for each of token_ids, or None when not asked."""

    prompt_id: int
    sample: int
    text: str
    token_ids: tuple[int, ...]
    token_logps: tuple[float, ...] | None = None


def vllm_available() -> bool:
    """vLLM is importable and a CUDA GPU is present (vLLM's only backend the harness uses)."""
    return importlib.util.find_spec("vllm") is not None and torch.cuda.is_available()


def resolve_backend(name: str, *, where: str = "evaluate.backend") -> str:
    """The backend that runs for a suite's `backend` value: "auto" picks vLLM when it can run."""
    if name not in BACKENDS:
        raise HarnessError(f"{where}: unknown generation backend {name!r}; use one of {', '.join(BACKENDS)}")
    if name == "auto":
        return "vllm" if vllm_available() else "transformers"
    if name == "vllm" and not vllm_available():
        why = "no CUDA GPU is present" if importlib.util.find_spec("vllm") else "vLLM is not installed"
        raise HarnessError(
            f"{where}: vllm requested but {why}; install it with `pip install \"harness[vllm]\"` on a "
            "CUDA machine, or set backend: auto (or transformers)"
        )
    return name


def sample_completions(
    model, tokenizer, prompts: list[str], config: SamplingConfig, *, progress: str | None = None,
    backend: str = "transformers",
) -> list[Completion]:
    """Sample config.n completions for every prompt, in prompt order; deterministic given the seed
    (for a given backend and device). `progress` names a progress bar (None: no bar)."""
    if resolve_backend(backend) == "vllm":
        return _sample_vllm(model, tokenizer, prompts, config, progress=progress)
    return _sample_transformers(model, tokenizer, prompts, config, progress=progress)


# ----------------------------------------------------------------------------------------------
# transformers


def generation_config(config: SamplingConfig, tokenizer) -> GenerationConfig:
    """transformers' GenerationConfig for `config`, every distribution-shaping value explicit.

    transformers (5.x, `_prepare_generation_config`) fills each value left None from the model's
    generation_config.json, then from its global defaults, whose top_k is 50; its TopKLogitsWarper
    is skipped only when top_k is 0, so "off" must be given as 0, never left None. Greedy
    (temperature 0) draws nothing, so its temperature, top_k and top_p stay unset."""
    sample = config.temperature > 0
    return GenerationConfig(
        do_sample=sample,
        temperature=config.temperature if sample else None,
        top_k=config.top_k if sample else None,
        top_p=config.top_p if sample else None,
        # neutral values of other processors that a checkpoint's generation_config.json may set
        typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0, repetition_penalty=1.0, no_repeat_ngram_size=0,
        max_new_tokens=config.max_new_tokens,
        num_return_sequences=config.n,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )


@contextmanager
def _without_checkpoint_defaults(model) -> Iterator[None]:
    """Generate as if the model shipped no generation_config.json: a checkpoint's recommended
    values (min_p, suppress_tokens, ...) are not the model's distribution, so none may apply
    beyond what `generation_config` states."""
    saved = getattr(model, "generation_config", None)
    model.generation_config = GenerationConfig()
    try:
        yield
    finally:
        model.generation_config = saved


@torch.no_grad()
def _sample_transformers(model, tokenizer, prompts, config: SamplingConfig, *, progress) -> list[Completion]:
    model.eval()
    torch.manual_seed(config.seed)
    generation = generation_config(config, tokenizer)
    out: list[Completion] = []
    starts = range(0, len(prompts), config.batch_size)
    # disable=None: tqdm hides itself when stderr is not a terminal (CI logs stay readable)
    hide = True if progress is None else None
    for start in tqdm(starts, desc=progress, disable=hide, leave=False):
        chunk = prompts[start : start + config.batch_size]
        input_ids, attention_mask = encode_prompts(tokenizer, chunk, device=model.device)
        with _without_checkpoint_defaults(model):
            generated = model.generate(
                input_ids=input_ids, attention_mask=attention_mask, generation_config=generation
            )
        new_tokens = generated[:, input_ids.shape[1] :].tolist()
        batch: list[Completion] = []
        for row, ids in enumerate(new_tokens):
            prompt_id, sample = start + row // config.n, row % config.n
            ids = _until_eos(ids, tokenizer.eos_token_id)
            text = tokenizer.decode(ids, skip_special_tokens=True)
            batch.append(Completion(prompt_id, sample, text, tuple(ids)))
        if config.logprobs:
            batch = _with_token_logps(model, tokenizer, prompts, batch)
        out += batch
    return out


def _with_token_logps(model, tokenizer, prompts, samples: list[Completion]) -> list[Completion]:
    """The samples with their token log-probs under `model`, from one teacher-forced pass.

    A pass after generation rather than the generation's own scores: those are the processed
    (temperature, top-p) distribution, and keeping the raw logits of every step would cost
    steps × rows × vocabulary floats."""
    from harness.logprobs import completion_token_logps  # import here: generation stays light

    rows = [encode_ids(prompt_ids(tokenizer, prompts[s.prompt_id]), list(s.token_ids)) for s in samples]
    batch = {k: v.to(model.device) for k, v in pad_right(rows, tokenizer.pad_token_id).items()}
    logps = completion_token_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
    out = []
    for i, s in enumerate(samples):
        values = logps[i][batch["completion_mask"][i]].tolist()
        out.append(replace(s, token_logps=tuple(values)))
    return out


def _until_eos(ids: list[int], eos_id: int) -> list[int]:
    """The sampled ids up to and including the first EOS (what follows is padding)."""
    return ids[: ids.index(eos_id) + 1] if eos_id in ids else ids


# ----------------------------------------------------------------------------------------------
# vLLM (thin: a snapshot of the in-memory model, one engine per call, the same Completion out)

VLLM_GPU_MEMORY_UTILIZATION = 0.4  # the policy and the reference stay on the same GPU


def _sample_vllm(model, tokenizer, prompts, config: SamplingConfig, *, progress) -> list[Completion]:
    from vllm import LLM, SamplingParams

    eos = tokenizer.eos_token_id
    # One SamplingParams per prompt, seeded by prompt, so that a prompt's samples do not depend
    # on which other prompts share the batch.
    params = [SamplingParams(**vllm_sampling_kwargs(config, seed=config.seed + i, eos_id=eos))
              for i in range(len(prompts))]
    requests = [{"prompt_token_ids": prompt_ids(tokenizer, p)} for p in prompts]
    with tempfile.TemporaryDirectory(prefix="harness-vllm-") as folder:
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        engine = LLM(model=folder, tokenizer=folder, seed=config.seed, dtype="auto",
                     gpu_memory_utilization=VLLM_GPU_MEMORY_UTILIZATION)
        try:
            outputs = engine.generate(requests, params, use_tqdm=progress is not None)
        finally:
            _shutdown_vllm()
            del engine
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
    out: list[Completion] = []
    for prompt_id, request_output in enumerate(outputs):
        for sample, choice in enumerate(request_output.outputs):
            ids = _until_eos(list(choice.token_ids), eos)
            logps = None
            if config.logprobs and choice.logprobs is not None:
                logps = tuple(float(step[t].logprob) for step, t in zip(choice.logprobs, ids))
            if choice.finish_reason == "stop" and eos not in ids:
                ids.append(eos)  # stopped on EOS without reporting it: keep the ids' convention
                logps = None if logps is None or len(logps) != len(ids) else logps
            text = tokenizer.decode(ids, skip_special_tokens=True)
            out.append(Completion(prompt_id, sample, text, tuple(ids), logps))
    return out


def _shutdown_vllm() -> None:
    """Tear down vLLM's process groups so that the engine's GPU memory can be freed (best effort:
    vLLM's teardown API changes between versions; the caller then drops the engine and collects)."""
    try:
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
    except Exception:  # noqa: BLE001 - an older or newer vLLM without these: the GC still runs
        pass
