"""How much memory a run needs per device, from the model's config alone (never its weights).

Used before any work: `harness plan` prints each run's prediction and the device it assumes,
and `harness run` refuses a run that will not fit the visible device before anything loads.
A run's peak is the larger of its two phases:

- training: the trained weights (and their fp32 master copy under bf16 autocast), gradients,
  AdamW's two moments, the frozen weights a step reads (the start model as a live reference;
  LoRA's frozen base), the activations autograd saves for one micro-batch of
  batch_size / grad_accumulation examples at max_length tokens (or only the layers' inputs
  under gradient checkpointing, plus one layer recomputed), and the log-prob chunk (the
  LM head's (chunk, vocab) float32 buffers, harness.logprobs);
- evaluation: the trained policy, the start model, the reward model and the generation engine
  (a KV cache; vLLM adds its own copy of the weights).

Activations are counted tensor by tensor from what a Llama-style decoder layer (Llama, Mistral,
Qwen2) saves for its backward pass under PyTorch's SDPA; benchmarks/memory_model.py checks the
counts against tracked allocations on CPU. Like DeepSpeed's and accelerate's estimators, the
allocator's fragmentation and the CUDA context are not counted: the device's capacity is
compared with HEADROOM of it kept free.

The configs of the flagship suites' models ship with the package (harness/model_configs/), so
this works offline; other models are read from a local folder or the Hugging Face cache.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from harness.errors import HarnessError

SHIPPED_CONFIGS = Path(__file__).parent / "model_configs"
GIB = 2**30
HEADROOM = 0.9  # the share of a device's memory a run may plan to use (fragmentation, CUDA context)
NF4_BYTES = 0.5 + 4 / 64  # 4-bit weights and one float32 absmax per block of 64 (bitsandbytes, no double quant)
LOGPROB_CHUNK = 1024  # harness.logprobs.DEFAULT_CHUNK_SIZE (that module imports torch)
LOGPROB_CHUNK_BUFFERS = 3  # (chunk, vocab) float32 buffers alive at once in the chunk's backward


def resolved_precision(precision: str, device_type: str) -> str:
    """`train.precision` on a device: "auto" is bf16 autocast over fp32 weights on CUDA and fp32
    on CPU (where bf16 matmuls are far slower)."""
    if precision != "auto":
        return precision
    return "bf16-mixed" if device_type == "cuda" else "fp32"


def frozen_bytes(device_type: str) -> int:
    """Bytes per parameter of a frozen model (start, reference, reward): bf16 on CUDA, fp32 on CPU."""
    return 2 if device_type == "cuda" else 4


@dataclass(frozen=True)
class Architecture:
    """A decoder's shape as its config.json gives it (Llama, Mistral, Qwen2 and their kin)."""

    vocab: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    tied: bool = False
    qkv_bias: bool = False
    classifier: bool = False  # a reward model: a score head of one output instead of the LM head

    @classmethod
    def from_config(cls, config: dict, where: str = "model") -> Architecture:
        config = config.get("text_config", config)
        try:
            heads = config["num_attention_heads"]
            return cls(
                vocab=config["vocab_size"], hidden=config["hidden_size"], intermediate=config["intermediate_size"],
                layers=config["num_hidden_layers"], heads=heads,
                kv_heads=config.get("num_key_value_heads") or heads,
                head_dim=config.get("head_dim") or config["hidden_size"] // heads,
                tied=bool(config.get("tie_word_embeddings", False)),
                qkv_bias=bool(config.get("attention_bias", config.get("model_type") == "qwen2")),
                classifier=any(a.endswith("ForSequenceClassification") for a in config.get("architectures") or ()),
            )
        except KeyError as err:
            raise HarnessError(f"{where}: its config.json has no {err.args[0]!r}; the memory model reads "
                               "Llama-style decoder configs (hidden_size, num_hidden_layers, ...)") from None

    @property
    def q_width(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_width(self) -> int:
        return self.kv_heads * self.head_dim

    def layer_linear_parameters(self) -> dict[str, int]:
        """Each linear layer's weight count in one decoder layer, by the module name peft targets."""
        d, q, kv, i = self.hidden, self.q_width, self.kv_width, self.intermediate
        return {"q_proj": d * q, "k_proj": d * kv, "v_proj": d * kv, "o_proj": q * d,
                "gate_proj": d * i, "up_proj": d * i, "down_proj": i * d}

    def layer_parameters(self) -> int:
        bias = self.q_width + 2 * self.kv_width if self.qkv_bias else 0
        return sum(self.layer_linear_parameters().values()) + bias + 2 * self.hidden  # two RMSNorms

    def head_parameters(self) -> int:
        if self.classifier:
            return self.hidden  # one score
        return 0 if self.tied else self.vocab * self.hidden

    def parameters(self) -> int:
        embedding = self.vocab * self.hidden
        return embedding + self.layers * self.layer_parameters() + self.hidden + self.head_parameters()

    def lora_parameters(self, r: int, targets: tuple[str, ...]) -> int:
        """A and B of every targeted linear: r·(fan_in + fan_out) each."""
        d, q, kv, i = self.hidden, self.q_width, self.kv_width, self.intermediate
        fans = {"q_proj": (d, q), "k_proj": (d, kv), "v_proj": (d, kv), "o_proj": (q, d),
                "gate_proj": (d, i), "up_proj": (d, i), "down_proj": (i, d)}
        return self.layers * sum(r * sum(fans[t]) for t in targets if t in fans)

    def activation_values_per_token(self) -> dict[str, int]:
        """Values one token leaves saved for the backward pass: per decoder layer, and in a
        layer's input alone (what checkpointing keeps). Per layer: each RMSNorm keeps its input,
        its normalized input and its output (3·d, twice); attention keeps q after RoPE, k and v
        (repeated to every head under grouped-query attention: transformers calls SDPA with
        repeated heads whenever there is a mask, i.e. padding or packing) and its output; the
        SwiGLU MLP keeps gate, up, silu(gate) and their product (4·intermediate)."""
        kv = self.q_width if self.kv_heads != self.heads else self.kv_width
        attention = 2 * self.q_width + 2 * kv
        return {"layer": 6 * self.hidden + attention + 4 * self.intermediate, "layer_input": self.hidden}

    def final_values_per_token(self, completion_share: float) -> float:
        """The final norm's input and normalized input, and the LM head's input gathered at
        completion positions (harness.logprobs)."""
        return (2 + completion_share) * self.hidden


def model_config(name: str, folder: str | None = None) -> dict:
    """A model's config.json: from its folder, the configs shipped with harness, or the Hugging
    Face cache (read only, never fetched); HarnessError when none has it."""
    candidates = [Path(folder) / "config.json"] if folder else []
    if Path(name).expanduser().is_dir():
        candidates.append(Path(name).expanduser() / "config.json")
    candidates.append(SHIPPED_CONFIGS / f"{name.replace('/', '--')}.json")
    for path in candidates:
        if path.is_file():
            return json.loads(path.read_text())
    try:
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(name, "config.json")
        if isinstance(cached, str):
            return json.loads(Path(cached).read_text())
    except Exception:  # noqa: BLE001 (not a Hub id, or no cache: the message below says what to do)
        pass
    raise HarnessError(f"model {name!r}: its config.json is not cached, so its memory cannot be predicted "
                       "offline; `huggingface-cli download NAME config.json`, or run where the network is reachable")


@dataclass(frozen=True)
class Lora:
    r: int
    targets: tuple[str, ...]


@dataclass(frozen=True)
class RunShape:
    """What a run's memory depends on besides the model: read from its suite (harness.suite)
    and its method's declarations (which passes read the reference)."""

    micro_batch: int  # examples per forward-backward
    rows_per_example: int  # sequences per example: 2 for a pair (chosen and rejected), else 1
    max_length: int
    precision: str  # resolved: bf16-mixed, bf16 or fp32
    device_type: str  # "cuda" or "cpu"
    trains: bool = True
    live_reference: bool = False  # the start model runs on every batch (its log-probs cannot be cached)
    checkpointing: bool = False
    lora: Lora | None = None
    quantize: str = "none"
    completion_share: float = 1.0  # completion tokens / all tokens (1: the bound)
    shards: int = 1  # processes an FSDP full shard splits the trained weights, gradients and moments over
    eval_batch: int = 16  # prompts generated at once (harness.generation's batch)
    eval_length: int = 0  # prompt + new tokens of one generated sequence
    vllm: bool = False


# Training components alive at different moments of the backward pass (the LM head's chunks
# first, then each layer recomputed): the peak holds the larger one, not both.
BACKWARD_TRANSIENTS = ("logprob_chunk", "recomputed_layer")


@dataclass
class Prediction:
    """Bytes per device, by component, for the training and the evaluation phase."""

    training: dict[str, float] = field(default_factory=dict)
    evaluation: dict[str, float] = field(default_factory=dict)

    @property
    def training_peak(self) -> float:
        held = sum(v for k, v in self.training.items() if k not in BACKWARD_TRANSIENTS)
        return held + max([v for k, v in self.training.items() if k in BACKWARD_TRANSIENTS], default=0.0)

    @property
    def evaluation_peak(self) -> float:
        return sum(self.evaluation.values())

    @property
    def peak(self) -> float:
        return max(self.training_peak, self.evaluation_peak)

    @property
    def peak_phase(self) -> str:
        return "training" if self.training_peak >= self.evaluation_peak else "evaluation"

    def describe(self) -> str:
        """One line: the peak and its largest components."""
        phase = getattr(self, self.peak_phase)
        parts = ", ".join(f"{k} {v / GIB:.1f}" for k, v in sorted(phase.items(), key=lambda kv: -kv[1]) if v >= 0.05 * GIB)
        return f"{self.peak / GIB:.1f} GiB at {self.peak_phase} ({parts or 'all under 0.05 GiB'})"


def predict(arch: Architecture, shape: RunShape, *, reward: Architecture | None = None) -> Prediction:
    """The run's memory per device by component (see the module's docstring)."""
    frozen = frozen_bytes(shape.device_type)
    n = arch.parameters()
    training: dict[str, float] = {}
    if shape.trains:
        trained = arch.lora_parameters(shape.lora.r, shape.lora.targets) if shape.lora else n
        training.update({k: v / shape.shards for k, v in _trained_state(trained, shape.precision).items()})
        if shape.lora:  # the frozen base (its reference with the adapters disabled: no copy)
            training["frozen_weights"] = _base_bytes(arch, shape.quantize, frozen)
        elif shape.live_reference:
            training["frozen_weights"] = n * frozen
        training.update(_activations(arch, shape))
    evaluation = {"policy_weights": n * frozen, "start_weights": n * frozen,
                  "reward_weights": reward.parameters() * frozen if reward else 0.0,
                  "generation": _generation_bytes(arch, shape, frozen)}
    return Prediction(training, evaluation)


def _trained_state(n: int, precision: str) -> dict[str, float]:
    """The trained weights, master copy, gradients and AdamW moments of n parameters. Under bf16
    autocast the fp32 weights are the master copy and autocast caches a bf16 working copy of each
    for the step; pure bf16 keeps weights, gradients and moments in bf16."""
    if precision == "bf16-mixed":
        return {"trained_weights": 2 * n, "master_weights": 4 * n, "gradients": 4 * n, "optimizer_states": 8 * n}
    width = 2 if precision == "bf16" else 4
    return {"trained_weights": width * n, "master_weights": 0, "gradients": width * n, "optimizer_states": 2 * width * n}


def _base_bytes(arch: Architecture, quantize: str, frozen: int) -> float:
    linear = arch.layers * sum(arch.layer_linear_parameters().values())
    rest = arch.parameters() - linear
    return linear * (NF4_BYTES if quantize == "nf4" else frozen) + rest * frozen


def _activation_width(precision: str) -> int:
    return 4 if precision == "fp32" else 2


def _activations(arch: Architecture, shape: RunShape) -> dict[str, float]:
    """Saved activations of one micro-batch (max_length tokens per sequence: a bound, packing and
    shorter batches use less), the layer recomputed under checkpointing and the log-prob chunk's
    buffers. A live reference runs under no_grad: it saves nothing."""
    tokens = shape.micro_batch * shape.rows_per_example * shape.max_length
    width = _activation_width(shape.precision)
    per = arch.activation_values_per_token()
    saved = per["layer_input"] if shape.checkpointing else per["layer"]
    values = tokens * (arch.layers * saved + arch.final_values_per_token(shape.completion_share))
    completion_tokens = shape.completion_share * tokens
    out = {"activations": values * width,
           "logprob_chunk": LOGPROB_CHUNK_BUFFERS * min(LOGPROB_CHUNK, completion_tokens) * arch.vocab * 4}
    if shape.checkpointing:
        out["recomputed_layer"] = tokens * per["layer"] * width
    return out


def _generation_bytes(arch: Architecture, shape: RunShape, frozen: int) -> float:
    """The KV cache of one generation batch (the transformers backend) or vLLM's engine: its own
    copy of the weights and a KV cache for its batch of sequences."""
    per_token = 2 * arch.layers * arch.kv_width * frozen
    if shape.vllm:
        from_vllm = 256  # harness.generation.VLLM_MAX_NUM_SEQS
        return arch.parameters() * frozen + from_vllm * shape.eval_length * per_token
    return shape.eval_batch * shape.eval_length * per_token


@dataclass(frozen=True)
class Device:
    """The device a prediction is compared with."""

    name: str
    memory: float  # bytes
    count: int = 1

    def describe(self) -> str:
        if self.count == 0:  # the CPU: the machine's memory
            return f"{self.name} ({self.memory / GIB:.0f} GiB)"
        return f"{self.count}× {self.name} ({self.memory / GIB:.0f} GiB each)"


def fits(prediction: Prediction, device: Device) -> bool:
    return prediction.peak <= HEADROOM * device.memory


def what_would_fit(arch: Architecture, shape: RunShape, device: Device, reward: Architecture | None = None) -> list[str]:
    """The settings, one change at a time then together, that bring the run under the device's
    capacity: FSDP over the device's GPUs, gradient checkpointing, a smaller micro-batch, LoRA
    (r 16 on every linear layer), QLoRA."""
    from dataclasses import replace

    everything = tuple(arch.layer_linear_parameters())
    lora = Lora(16, everything)
    options = [
        ("train.gradient_checkpointing=true", replace(shape, checkpointing=True)),
        ("train.grad_accumulation=batch_size (micro-batch 1)", replace(shape, micro_batch=1)),
        ("train.gradient_checkpointing=true with micro-batch 1", replace(shape, checkpointing=True, micro_batch=1)),
        ("train.peft (LoRA) with gradient checkpointing", replace(shape, lora=lora, checkpointing=True)),
        ("train.peft with train.quantize=nf4 (QLoRA) and checkpointing", replace(
            shape, lora=lora, quantize="nf4", checkpointing=True, micro_batch=1)),
    ]
    if device.count > 1 and shape.shards == 1 and shape.lora is None:  # the visible GPUs, sharded
        fsdp = f"train.distributed={{strategy: fsdp, gpus: {device.count}}}"
        options[:0] = [(fsdp, replace(shape, shards=device.count)),
                       (f"{fsdp} with checkpointing", replace(shape, shards=device.count, checkpointing=True))]
    if shape.device_type != "cuda":
        options = [o for o in options if "nf4" not in o[0]]
    named, seen = [], [shape]  # an option the run already has (checkpointing on) is not named
    for name, option in options:
        if option not in seen:
            seen.append(option)
            if fits(predict(arch, option, reward=reward), device):
                named.append(name)
    return named


def gpu_hours(flops: float, peak_flops: float, mfu: float) -> float:
    """Hours of one device to do `flops` at `mfu` of its peak FLOP/s."""
    return flops / (peak_flops * mfu) / 3600 if peak_flops > 0 and mfu > 0 else math.nan
