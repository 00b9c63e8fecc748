"""DPO training throughput (preference pairs per second): the harness's loop against TRL 1.16's
DPOTrainer, on the same model, data, batch size, sequence length, step count and machine, in one
process.

    python benchmarks/train_throughput.py                       # CPU: tiny Llama, 24 steps of 16 pairs
    python benchmarks/train_throughput.py --steps 2 --hidden 16 --layers 1
    python benchmarks/train_throughput.py --device cuda --shape qwen2.5-0.5b --max-length 512

What is compared.
- Model: a LlamaForCausalLM built from a config with random weights (the sandbox's shape by
  default: hidden 128, 4 layers, 4 heads, intermediate 2.75x), or, with --shape qwen2.5-0.5b, a
  Qwen2ForCausalLM with Qwen2.5-0.5B's shape (random weights, for GPUs). Every run starts from the
  same initial weights (deep copies of one model); nothing is downloaded.
- Data: prompt/chosen/rejected strings from the sandbox grammar (harness.sandbox.grammar,
  fixed seed), completions of random length up to --max-length, tokenized by a word-level
  tokenizer fitted like harness.sandbox.lm.fit_tokenizer. Both sides see token-for-token the
  same sequences ([bos] prompt completion [eos]; checked below). The data holds exactly
  steps x batch-size pairs, so each side trains one epoch of it and the reference pass covers
  exactly the trained pairs.
- Harness: harness.train.loop.train_policy with loss "dpo", a "steps" budget, PairedData from
  paired_from_rows and cached_reference from harness.train.reference.reference_sums, called as
  harness.runner does. Its time is reference_sums + train_policy (the reference's forward pass
  is real work, so it is timed). It runs twice: as shipped (packed rows: shared prompts once, no
  padding; harness.data.packing) and with train.packing off (the padded batch TRL also runs),
  which shows how much of the gap packing makes. The ratio uses the shipped configuration.
- TRL: trl.DPOTrainer, once with its default live reference (a reference forward every step)
  and once with precompute_ref_log_probs=True (whose precompute pass, run inside the trainer's
  constructor, is timed and added). The faster of the two is the peer for the ratio. Time is
  that plus trainer.train() (which, like train_policy, builds its optimizer and scheduler).
- Matched settings: AdamW (each side's own: torch.optim.AdamW(fused=True) for the harness, transformers'
  default adamw_torch_fused for TRL; both fused), the same learning rate, cosine schedule with 10% warmup,
  weight decay 0, gradient clipping at 1.0, beta 0.1, no gradient accumulation, no activation
  checkpointing of the transformer body, the same precision (--dtype: fp32 = no autocast on
  either side; bf16 = bf16 autocast on both), the same reference batch size for the precompute (64).
- Each side first runs a short warm-up training (--warmup steps on fresh copies, untimed), then
  --repeats timed rounds, the sides interleaved within each round; each side's best round counts.

Printed: a table (side, config, steps, seconds of the best round, pairs/s, median seconds, CPU
seconds of the best round; on CUDA also peak memory from torch.cuda.max_memory_allocated and
MFU = model FLOPs (harness.train.flops.ModelShape, PaLM convention, reference forward included,
the same count for every side) / seconds / harness.train.hardware.peak_flops), and last the line
`ratio: X`: harness pairs/s over the faster TRL configuration's pairs/s.

Where the ratio comes from, and why it stays under 2 on the CPU default. Both sides do the
same arithmetic per real token, and matmuls (about half of the harness's CPU time) already run
near this kind of machine's peak (2 AMD EPYC cores: ~170 GFLOP/s on the model's shapes, 187 on a
4096^3 fp32 matmul). What the harness does not do is work on padding: over the default run's 24
batches, 33% of the padded positions are padding and 6.7% of the real tokens repeat a prompt, so
even a perfect layout saves at most 48032/29911 = 1.61x on token-proportional work; the layouts
packing picks hold 1.42x fewer positions (rows of equal length leave some slots empty) and are
wider (attention costs more per position). The rest is per-step overhead: the padded harness is
~1.1x TRL's best. About 1.61 x 1.1 = 1.8 is the ceiling without changing the data or the
arithmetic; measured 1.44-1.46 (2026-11-25, with 2 threads or 1). Data with longer prompts or
more varied lengths gain more (on the sandbox's data, `harness run suites/quickstart.yaml` trains
~1.9x faster packed); this benchmark's data were fixed before packing existed and are not tuned
to it.

On a shared CPU, other processes make wall times erratic (two torch threads that wait on each
other suffer most, their CPU time too): the header shows the load average (this process counts
in it) and a warning follows when a side's rounds differ by more than 20%. `--threads 1` then
gives steadier numbers, and its `cpu s` column measures the work itself.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import gc
import math
import os
import random
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # nothing here may reach a hub
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

import torch  # noqa: E402

BETA = 0.1
LR = 5e-5
REFERENCE_BATCH = 64  # harness.train.reference.reference_sums' default batch; TRL's precompute gets the same
# Qwen2.5's architectures (random weights): hidden, intermediate, layers, query heads, KV heads
QWEN_SHAPES = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                         num_key_value_heads=2),
}


def _parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=24, help="timed optimizer steps per side")
    parser.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps per side")
    parser.add_argument("--batch-size", type=int, default=16, help="preference pairs per optimizer step")
    parser.add_argument("--max-length", type=int, default=64, help="tokens per sequence, prompt included")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--heads", type=int, default=0, help="attention heads (0: hidden/32, at least 1)")
    parser.add_argument("--shape", choices=["tiny", *QWEN_SHAPES], default="tiny",
                        help="tiny: a Llama from --hidden/--layers; qwen2.5-*: Qwen2.5's shapes (GPU)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default=None,
                        help="fp32: no autocast; bf16: bf16 autocast on both sides "
                             "(default: bf16 on CUDA, fp32 on CPU)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed rounds (sides interleaved); the best round of each side is reported")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (0: torch's default, one per core)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    args.dtype = args.dtype or ("bf16" if args.device == "cuda" else "fp32")
    if min(args.steps, args.batch_size, args.repeats) < 1 or args.warmup < 0:
        parser.error("--steps, --batch-size and --repeats must be >= 1, --warmup >= 0")
    if args.max_length < 16:
        parser.error("--max-length must be >= 16 (the grammar's prompts take up to ~10 tokens)")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: CUDA is not available")
    return args


# ----------------------------------------------------------------------------------------------
# Data, tokenizer and model


def make_rows(n: int, max_length: int, seed: int, lengths: Callable[[random.Random, str], int] | None = None
              ) -> list[dict]:
    """n preference rows in the sandbox language. Completions are whole words (one token each)
    cut to a random length that fits max_length with the prompt, [bos] and [eos]: no truncation
    on either side, realistic padding.

    `lengths(rng, "prompt" or "completion")` (a drawn token count) replaces both distributions:
    the prompt and each completion get a drawn number of words, the prompt at most half of max_length, the
    completions cut to the room left (benchmarks/gpu_check.py draws them from a dataset's quantiles)."""
    from harness.sandbox import grammar

    rng = random.Random(seed)

    def words(count: int) -> str:
        out: list[str] = []
        while len(out) < count:
            out += grammar.document(rng).split()
        return " ".join(out[:count])

    def completion(room: int) -> str:
        return words(min(lengths(rng, "completion"), room) if lengths else rng.randint(max(1, room // 4), room))

    rows = []
    for _ in range(n):
        prompt = words(min(lengths(rng, "prompt"), max_length // 2)) if lengths else grammar.prompt(rng)
        room = max(1, max_length - len(prompt.split()) - 2)
        rows.append({"prompt": prompt, "chosen": completion(room), "rejected": completion(room)})
    return rows


def build_tokenizer(rows: list[dict]):
    """A word-level tokenizer fitted to the rows' words, as the sandbox fits its own
    (harness.sandbox.lm.fit_tokenizer)."""
    from harness.sandbox.lm import fit_tokenizer

    return fit_tokenizer([text for r in rows for text in (r["prompt"], r["chosen"], r["rejected"])])


def build_model(args: argparse.Namespace, tokenizer) -> torch.nn.Module:
    """Random initial weights from a config (seeded), on the CPU; every run copies it."""
    torch.manual_seed(args.seed)
    special = {"pad_token_id": tokenizer.pad_token_id, "bos_token_id": tokenizer.bos_token_id,
               "eos_token_id": tokenizer.eos_token_id}
    if args.shape in QWEN_SHAPES:
        from transformers import Qwen2Config, Qwen2ForCausalLM

        config = Qwen2Config(vocab_size=151936, **QWEN_SHAPES[args.shape], max_position_embeddings=32768,
                             rope_theta=1_000_000.0, tie_word_embeddings=True, **special)
        return Qwen2ForCausalLM(config)
    from transformers import LlamaConfig, LlamaForCausalLM

    heads = args.heads or max(1, args.hidden // 32)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=args.hidden,
                         intermediate_size=int(2.75 * args.hidden), num_hidden_layers=args.layers,
                         num_attention_heads=heads, num_key_value_heads=heads,
                         max_position_embeddings=max(args.max_length, 64), tie_word_embeddings=True, **special)
    return LlamaForCausalLM(config)


def fresh_copy(model: torch.nn.Module, device: torch.device, *, frozen: bool = False) -> torch.nn.Module:
    out = copy.deepcopy(model).to(device)
    if frozen:
        out.eval().requires_grad_(False)
    return out


# ----------------------------------------------------------------------------------------------
# Timing


@dataclass
class Measured:
    side: str
    config: str
    steps: int
    pairs: int
    seconds: float
    cpu_seconds: float  # process CPU time over the same span (all threads)
    peak_mib: float = math.nan

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / self.seconds


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clean(device: torch.device) -> None:
    """Free the previous run's tensors, so a run's peak memory is its own."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else math.nan


@contextlib.contextmanager
def harness_precision(dtype: str, device: torch.device):
    """The harness autocasts to bf16 on CUDA and never on CPU (harness.train.hardware.autocast,
    used by the training loop and the reference pass). Only when --dtype asks for the other
    precision is that choice replaced, so both sides run at the same precision; the defaults
    (fp32 on CPU, bf16 on CUDA) run the harness untouched."""
    from harness.train import hardware

    if dtype == ("bf16" if device.type == "cuda" else "fp32"):
        yield
        return
    original = hardware.autocast
    hardware.autocast = lambda dev, *_: (torch.autocast(dev.type, dtype=torch.bfloat16) if dtype == "bf16"
                                          else contextlib.nullcontext())
    try:
        yield
    finally:
        hardware.autocast = original


# ----------------------------------------------------------------------------------------------
# The harness side


def run_harness(init: torch.nn.Module, tokenizer, rows: list[dict], args, steps: int, device, *,
                packing: bool = True) -> Measured:
    from harness.losses import get_loss
    from harness.suite import Budget, TrainConfig
    from harness.data.batches import paired_from_rows
    from harness.train.loop import TrainSetup, train_policy
    from harness.train.reference import reference_sums

    data = paired_from_rows(tokenizer, rows, args.max_length)  # tokenizing is outside the timing, as for TRL
    loss = get_loss("dpo")
    policy, reference = fresh_copy(init, device), fresh_copy(init, device, frozen=True)
    _clean(device)
    _sync(device)
    started, cpu_started = time.perf_counter(), time.process_time()
    cached = reference_sums(reference, data, pad_id=tokenizer.pad_token_id, batch_size=REFERENCE_BATCH,
                            packing=packing)
    setup = TrainSetup(
        loss=loss, hparams={**loss.hparams, "beta": BETA}, data=data, budget=Budget("steps", steps),
        config=TrainConfig(batch_size=args.batch_size, lr=LR, max_length=args.max_length, warmup_ratio=0.1,
                           schedule="cosine", weight_decay=0.0, grad_clip=1.0, checkpoint_every=0,
                           packing=packing),
        seed=args.seed, pad_id=tokenizer.pad_token_id, reference=reference, cached_reference=cached,
    )
    result = train_policy(policy, setup)
    _sync(device)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    if result.accounting.optimizer_steps != steps:
        raise RuntimeError(f"the harness ran {result.accounting.optimizer_steps} steps, not {steps}")
    config = "packed (default)" if packing else "padded (packing off)"
    return Measured("harness", config, steps, steps * args.batch_size, seconds, cpu_seconds, _peak_mib(device))


# ----------------------------------------------------------------------------------------------
# The TRL side (the glue is this section)


def trl_rows(rows: list[dict], tokenizer) -> list[dict]:
    """TRL quirks in tokenizing standard (non-chat) prompt/chosen/rejected text:
    - it tokenizes `prompt` and `prompt + chosen` as plain string concatenations and takes the
      completion as what follows their common prefix, so the completion needs its own leading
      space ("the movie was" + "great" would tokenize as one unknown word);
    - it appends `tokenizer.eos_token` to chosen and rejected as text (the tokenizer splits added
      special tokens out of the text, so "great .<eos>" ends in the EOS id);
    - it adds no BOS of its own: the tokenizer's post-processor does (harness.sandbox.lm's adds
      `<bos>` like Llama's), as the harness starts every sequence with one.
    """
    return [{"prompt": r["prompt"], "chosen": " " + r["chosen"], "rejected": " " + r["rejected"]} for r in rows]


def _timed_trainer_class():
    from trl import DPOTrainer

    class TimedDPOTrainer(DPOTrainer):
        """DPOTrainer that times its reference precompute (run inside __init__) and checks that
        it really ran: TRL reuses a precompute cached under the dataset's fingerprint and the
        model's hash, which would make a second run look free."""

        precompute_seconds = 0.0
        precompute_cpu_seconds = 0.0
        precompute_batches = 0

        def _precompute_ref_logps(self, dataset, name, batch_size):
            _sync(self.args.device)
            started, cpu_started = time.perf_counter(), time.process_time()
            out = super()._precompute_ref_logps(dataset, name, batch_size)
            _sync(self.args.device)
            self.precompute_seconds += time.perf_counter() - started
            self.precompute_cpu_seconds += time.process_time() - cpu_started
            return out

        def compute_ref_log_probs(self, model, inputs):
            self.precompute_batches += 1
            return super().compute_ref_log_probs(model, inputs)

    return TimedDPOTrainer


def _check_same_tokens(trainer, tokenizer, rows: list[dict], max_length: int) -> None:
    """TRL's tokenized pairs must equal the harness's, token for token."""
    from harness.data.tokenize import encode_pair

    dataset = trainer.train_dataset
    if len(dataset) != len(rows):
        raise RuntimeError(f"TRL kept {len(dataset)} of {len(rows)} pairs")
    for example, row in zip(dataset, rows):
        for side in ("chosen", "rejected"):
            ours = encode_pair(tokenizer, row["prompt"], row[side], max_length).input_ids
            theirs = example["prompt_ids"] + example[f"{side}_ids"]
            if ours != theirs:
                raise RuntimeError(f"TRL tokenized a {side} sequence differently:\n{theirs}\nvs the harness's\n{ours}")


def run_trl(init: torch.nn.Module, tokenizer, rows: list[dict], args, steps: int, device, *, precompute: bool,
            check_tokens: bool = False, attention: str | None = None) -> Measured:
    """TRL's DPOTrainer on a copy of `init`, with the attention implementation `attention` (None:
    the model's own, SDPA for the models built here)."""
    from datasets import Dataset
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig

    trainer_class = _timed_trainer_class()
    policy = fresh_copy(init, device)
    # Without precompute TRL needs the reference model: given none, it would rebuild one with
    # from_pretrained(config._name_or_path), which a model built from a config does not have.
    # With precompute and no ref_model, TRL scores the data with the policy before training and
    # keeps no reference in memory (its intended use).
    reference = None if precompute else fresh_copy(init, device, frozen=True)
    for model in (policy, reference):
        if model is not None and attention:
            model.set_attn_implementation(attention)
    dataset = Dataset.from_list(trl_rows(rows, tokenizer))
    _clean(device)
    with tempfile.TemporaryDirectory() as output_dir:
        config = DPOConfig(
            output_dir=output_dir, max_steps=steps, num_train_epochs=1, per_device_train_batch_size=args.batch_size,
            gradient_accumulation_steps=1, max_length=args.max_length, beta=BETA, loss_type=["sigmoid"],
            learning_rate=LR, lr_scheduler_type="cosine", warmup_steps=0.1, weight_decay=0.0, max_grad_norm=1.0,
            precompute_ref_log_probs=precompute, precompute_ref_batch_size=REFERENCE_BATCH,
            # TRL's defaults differ from transformers': bf16=True (mixed precision even with
            # use_cpu) and gradient_checkpointing=True (the body is recomputed in the backward).
            # Both are set to what the harness does, so both sides do the same arithmetic. (On
            # the 2-core CPU this was written on, TRL at its own defaults took about as long.)
            bf16=args.dtype == "bf16", gradient_checkpointing=False,
            use_cpu=device.type == "cpu", dataloader_num_workers=0, seed=args.seed, data_seed=args.seed,
            report_to="none", logging_strategy="no", save_strategy="no", eval_strategy="no",
            disable_tqdm=True,
        )
        trainer = trainer_class(model=policy, ref_model=reference, args=config, train_dataset=dataset,
                                processing_class=tokenizer)
        # With disable_tqdm=True, Trainer prints every log dict (its end-of-training summary too)
        # to stdout through PrinterCallback, even with logging_strategy="no".
        trainer.remove_callback(PrinterCallback)
        if precompute and trainer.precompute_batches == 0:
            raise RuntimeError("TRL's reference precompute did not run (a cached result was reused)")
        if check_tokens:
            _check_same_tokens(trainer, tokenizer, rows, args.max_length)
        _sync(device)
        started, cpu_started = time.perf_counter(), time.process_time()
        trainer.train()
        _sync(device)
        seconds = time.perf_counter() - started + trainer.precompute_seconds
        cpu_seconds = time.process_time() - cpu_started + trainer.precompute_cpu_seconds
        if trainer.state.global_step != steps:
            raise RuntimeError(f"TRL ran {trainer.state.global_step} steps, not {steps}")
    name = "precompute_ref_log_probs" if precompute else "live reference (default)"
    name += f", {attention}" if attention else ""
    return Measured("trl", name, steps, steps * args.batch_size, seconds, cpu_seconds, _peak_mib(device))


# ----------------------------------------------------------------------------------------------


def model_flops(init: torch.nn.Module, tokenizer, rows: list[dict], max_length: int) -> float:
    """Training FLOPs of one epoch over `rows`: policy forward+backward and one reference forward
    of every sequence (harness.train.flops; what the harness's accounting counts; the same for
    every side, which all do that work once)."""
    from harness.data.batches import paired_from_rows
    from harness.train.flops import ModelShape

    lengths = [len(e.input_ids) for e in paired_from_rows(tokenizer, rows, max_length).sequences()]
    shape = ModelShape.of(init)
    return shape.train_flops(lengths) + shape.forward_flops(lengths)


@contextlib.contextmanager
def _quiet():
    """Keep TRL/transformers/datasets progress bars and info logs out of the table."""
    import datasets
    import transformers

    previous = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"  # TRL's precompute bar reads this
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()
    bars = datasets.utils.logging.is_progress_bar_enabled()
    datasets.disable_progress_bars()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            datasets.enable_progress_bars()
        if previous is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = previous


def _load_average() -> float:
    """The 1-minute load average (NaN where the OS does not say): on a shared machine, a load above
    the core count means the timings include waiting for other processes."""
    try:
        return os.getloadavg()[0]
    except OSError:
        return math.nan


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return _main(args)
    finally:
        torch.set_num_threads(threads)


@dataclass
class Comparison:
    """One run of the comparison: each side's best round, its median seconds, and the context."""

    args: argparse.Namespace
    results: list[Measured]  # harness packed, harness padded, TRL live reference, TRL precompute
    medians: list[float]
    flops: float  # model FLOPs of one side's timed work (policy train + reference forward)
    peak_flops: float
    parameters: int
    vocab: int
    model_class: str
    load_before: float
    load_after: float

    @property
    def harness(self) -> Measured:
        return self.results[0]

    @property
    def peer(self) -> Measured:
        """The faster TRL configuration."""
        return max(self.results[2:], key=lambda m: m.pairs_per_second)

    @property
    def ratio(self) -> float:
        return self.harness.pairs_per_second / self.peer.pairs_per_second

    def mfu(self, m: Measured) -> float:
        return self.flops / m.seconds / self.peak_flops if not math.isnan(self.peak_flops) else math.nan

    def figures(self) -> dict:
        """The comparison as plain data (JSON): per side pairs/s, seconds, peak MiB, MFU; the ratio."""
        sides = [{"side": m.side, "config": m.config, "steps": m.steps, "pairs": m.pairs, "seconds": m.seconds,
                  "median_seconds": median, "pairs_per_s": m.pairs_per_second, "peak_mib": m.peak_mib,
                  "mfu": self.mfu(m)} for m, median in zip(self.results, self.medians)]
        peer = self.peer
        return {"shape": self.args.shape, "parameters": self.parameters, "dtype": self.args.dtype,
                "batch_size": self.args.batch_size, "max_length": self.args.max_length, "steps": self.args.steps,
                "sides": sides, "peer": f"trl {peer.config}", "ratio_pairs_per_s": self.ratio,
                "ratio_peak_memory": self.harness.peak_mib / peer.peak_mib if peer.peak_mib else math.nan,
                "harness_mfu": self.mfu(self.harness), "peer_mfu": self.mfu(peer)}


def compare(args: argparse.Namespace) -> Comparison:
    """Build the data and the model, warm up, then time every side in interleaved rounds."""
    from harness.train.hardware import peak_flops

    device = torch.device(args.device)
    load_before = _load_average()
    if args.device == "cpu" and args.shape != "tiny":
        print(f"note: --shape {args.shape} on CPU is very slow; it is meant for GPUs", file=sys.stderr)
    rows = make_rows(args.steps * args.batch_size, args.max_length, args.seed)
    warm_rows = make_rows(max(args.warmup, 1) * args.batch_size, args.max_length, args.seed + 1)
    tokenizer = build_tokenizer(rows + warm_rows)
    init = build_model(args, tokenizer)
    flops = model_flops(init, tokenizer, rows, args.max_length)

    with _quiet(), harness_precision(args.dtype, device):
        sides = [
            lambda r, s, check: run_harness(init, tokenizer, r, args, s, device),
            lambda r, s, check: run_harness(init, tokenizer, r, args, s, device, packing=False),
            lambda r, s, check: run_trl(init, tokenizer, r, args, s, device, precompute=False, check_tokens=check),
            lambda r, s, check: run_trl(init, tokenizer, r, args, s, device, precompute=True),
        ]
        if args.warmup:
            for run in sides:
                run(warm_rows, args.warmup, False)
        # Rounds interleave the sides, so a slow spell of a shared machine hits all of them; each
        # side's best round is reported (the least disturbed measurement of the same work).
        runs: list[list[Measured]] = [[] for _ in sides]
        for round_ in range(args.repeats):
            for i, run in enumerate(sides):
                runs[i].append(run(rows, args.steps, round_ == 0))
                _clean(device)
    return Comparison(
        args=args, results=[min(r, key=lambda m: m.seconds) for r in runs],
        medians=[statistics.median(m.seconds for m in r) for r in runs], flops=flops,
        peak_flops=peak_flops(device), parameters=sum(p.numel() for p in init.parameters()),
        vocab=init.config.vocab_size, model_class=type(init).__name__, load_before=load_before,
        load_after=_load_average(),
    )


def _main(args: argparse.Namespace) -> int:
    c = compare(args)
    device = torch.device(args.device)
    where = f"cuda ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else "cpu"
    print(f"model: {args.shape} ({c.model_class}, {c.parameters / 1e6:.2f}M parameters, vocab "
          f"{c.vocab}); device {where}, {torch.get_num_threads()} torch threads on "
          f"{os.cpu_count()} cores; dtype {args.dtype}")
    print(f"run: batch {args.batch_size} pairs, max_length {args.max_length}, {args.steps} timed steps after "
          f"{args.warmup} warm-up steps; seconds = best of {args.repeats} interleaved rounds (median beside "
          f"it); load average {c.load_before:.2f} before, {c.load_after:.2f} after")
    if args.repeats > 1 and any(median > 1.2 * m.seconds for m, median in zip(c.results, c.medians)):
        print("warning: rounds differ by more than 20% (other processes competing for the CPU?); the best "
              "rounds are compared, but run again on an idle machine (or with --threads 1) to confirm")
    cuda = device.type == "cuda"
    header = f"{'side':<8} {'config':<26} {'steps':>5} {'seconds':>9} {'pairs/s':>9} {'median s':>9} {'cpu s':>8}"
    if cuda:
        header += f" {'peak MiB':>9} {'MFU':>6}"
    print(header)
    print("-" * len(header))
    for m, median in zip(c.results, c.medians):
        line = (f"{m.side:<8} {m.config:<26} {m.steps:>5} {m.seconds:>9.3f} {m.pairs_per_second:>9.2f}"
                f" {median:>9.3f} {m.cpu_seconds:>8.3f}")
        if cuda:
            mfu = c.mfu(m)
            line += f" {m.peak_mib:>9.0f} " + (f"{mfu:>6.1%}" if not math.isnan(mfu) else f"{'n/a':>6}")
        print(line)
    print(f"peer: trl {c.peer.config}; model FLOPs per side {c.flops:.3e} (policy train + reference forward)")
    print(f"ratio: {c.ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
