"""Our losses against TRL 1.16's, on the same random inputs, without a real model.

How TRL is driven. TRL 1.16's DPOTrainer computes every loss type inside
`DPOTrainer._compute_loss(self, model, inputs, return_outputs)`, which calls
`model(..., labels=..., fused_lm_head=True)` and reads `.log_probs` (per-token log-probs, 0 where
the label is masked). We call that method unbound on a `SimpleNamespace` carrying only the
attributes it reads, with stand-in models that return fixed per-token log-probs; so TRL's own
code does the summing, the LD-DPO split, the f-divergence transform, the WPO weights and the
loss, and returns the batch-mean loss. CPO, SimPO and ORPO live in `trl.experimental` (CPOTrainer,
ORPOTrainer); there we call `concatenated_forward` + the loss with a stand-in model that returns
fixed logits, and compute our inputs from the same logits.

Correspondences (ours ↔ TRL 1.16) and conventions:
- dpo, tr_dpo ↔ loss_type="sigmoid" (TRL 0.29 removed label smoothing from "sigmoid": no cDPO).
- ipo(length_normalize=True, tau=β) ↔ "ipo": TRL averages the log-ratios per token, as our
  default does; the summed form (length_normalize=False) has no TRL counterpart.
- rdpo(epsilon=ε) ↔ "robust" with label_smoothing=ε.
- exo_pair(epsilon=ε) ↔ "exo_pair" with label_smoothing=ε.
- nca_pair, apo_zero, apo_down, discopop(tau=discopop_tau) ↔ same names.
- sppo_hard(halve=False) ↔ "sppo_hard": TRL sums the two squares, the authors' code (our
  default) halves them.
- rso_hinge ↔ "hinge"; sft(reduction="token") ↔ "sft".
- a mixture dpo+bco_pair+sft with weights (w1, w2, w3) ↔ loss_type=["sigmoid", "bco_pair", "sft"]
  with loss_weights=[w1, w2, w3] (bco_pair without its running shift, as TRL).
- bco_pair(reward_shift=False) ↔ "bco_pair": TRL 1.16 has no running reward shift (δ = 0).
- aot(variant="paired") ↔ "aot"; aot(variant="unpaired") ↔ "aot_unpaired" (0.9-era TRL named this
  unpaired computation "aot_pair").
  Batch-level losses (sorting): only the batch mean is comparable.
- ln_dpo ↔ "sigmoid_norm".
- rpo(alpha=a) ↔ loss_type=["sigmoid", "sft"], loss_weights=[1, a]; TRL's "sft" is one token-mean
  over the batch, ours per example: compared on equal-length completions.
- ld_dpo(alpha=a) ↔ DPOConfig(ld_alpha=a) with "sigmoid".
- f_dpo(divergence=d, alpha=a) ↔ f_divergence_type=d, f_alpha_divergence_coef=1 − a (TRL ≥ 0.29
  flipped the α-divergence parameterization; a = 0.3 here, where the two differ).
- wpo(clamp_weight=False) ↔ use_weighting=True: both align each token's log-prob by the model's
  log Σ_v π² (random here, and the same for both); TRL does not clamp the pair weight at 1 as the
  authors' code (our default) does.
- simpo(beta=β, gamma_beta_ratio=g) ↔ CPOTrainer loss_type="simpo", simpo_gamma=β·g, cpo_alpha=0.
- cpo(beta, alpha) ↔ CPOTrainer loss_type="sigmoid", cpo_alpha=alpha (equal lengths for the NLL).
- orpo(lambda_=λ) ↔ ORPOTrainer beta=λ; TRL's NLL includes the prompt tokens, so the prompt is a
  single token (never a target) and completions have equal lengths.
- TRL's "hinge" is RSO's reference-normalized hinge max(0, 1 − β h) (our `rso_hinge`), not SLiC-HF
  (our `slic` is reference-free with an SFT term).
"""

from __future__ import annotations

import types
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from harness.losses import LossInputs, get_loss

pytest.importorskip("trl")
from trl.trainer.dpo_trainer import DPOTrainer  # noqa: E402

TOL = {"rtol": 1e-5, "atol": 1e-6}  # float32 throughout: TRL's α-divergence clamp table has no float64
SEEDS = (0, 1, 2)


# ---------------------------------------------------------------------------------------------
# Inputs: one set of per-token log-probs, seen by us as LossInputs and by TRL as model outputs
# ---------------------------------------------------------------------------------------------


class Batch:
    """B random pairs over T completion positions: per-token log-probs (B, T) for policy and
    reference, masks (B, T) with random lengths (or all equal), and what each side needs."""

    def __init__(self, seed: int, batch: int = 6, positions: int = 9, equal_lengths: int | None = None):
        g = torch.Generator().manual_seed(seed)

        def mask() -> torch.Tensor:
            lengths = (
                torch.full((batch,), equal_lengths)
                if equal_lengths is not None
                else torch.randint(1, positions + 1, (batch,), generator=g)
            )
            return torch.arange(positions).unsqueeze(0) < lengths.unsqueeze(1)

        def token_logps(m: torch.Tensor) -> torch.Tensor:
            return -(0.05 + 2.0 * torch.rand(batch, positions, generator=g)) * m

        self.chosen_mask, self.rejected_mask = mask(), mask()
        self.tokens = {
            "policy_chosen": token_logps(self.chosen_mask),
            "policy_rejected": token_logps(self.rejected_mask),
            "reference_chosen": token_logps(self.chosen_mask),
            "reference_rejected": token_logps(self.rejected_mask),
        }
        # the policy's log Σ_v π² per position lies in [2·log π(y_t), 0]; drawn in that range
        self.log_collision = {
            side: self.tokens[f"policy_{side}"] * 2.0 * torch.rand(batch, positions, generator=g)
            for side in ("chosen", "rejected")
        }

    def ours(self) -> LossInputs:
        return LossInputs(
            **{f"{k}_logps": v.sum(dim=1) for k, v in self.tokens.items()},
            **{f"{k}_token_logps": v for k, v in self.tokens.items()},
            chosen_mask=self.chosen_mask,
            rejected_mask=self.rejected_mask,
            chosen_lengths=self.chosen_mask.sum(dim=1).float(),
            rejected_lengths=self.rejected_mask.sum(dim=1).float(),
            chosen_log_collision=self.log_collision["chosen"],
            rejected_log_collision=self.log_collision["rejected"],
        )

    def trl_inputs(self) -> dict[str, torch.Tensor]:
        """TRL's collated batch: [chosen; rejected] rows, one prompt token then the completion;
        the log-probs at position t+1 are predicted from position t (hence the extra column)."""
        completion = torch.cat([self.chosen_mask, self.rejected_mask]).long()
        completion_mask = torch.cat([torch.zeros(completion.size(0), 1, dtype=torch.long), completion], dim=1)
        return {
            "input_ids": torch.zeros_like(completion_mask),
            "attention_mask": torch.ones_like(completion_mask),
            "completion_mask": completion_mask,
        }

    def policy_model(self) -> FakeLM:
        return FakeLM(torch.cat([self.tokens["policy_chosen"], self.tokens["policy_rejected"]]),
                      torch.cat([self.log_collision["chosen"], self.log_collision["rejected"]]))

    def reference_model(self) -> FakeLM:
        return FakeLM(torch.cat([self.tokens["reference_chosen"], self.tokens["reference_rejected"]]))


class FakeLM:
    """Stands in for a causal LM under TRL's fused LM head: returns fixed per-token log-probs
    (2B, T), already 0 at masked labels, log Σ_v π² per position (WPO's alignment; 0 unless
    given), and zeros for the logged-only outputs."""

    training = False  # TRL then skips the train-only token counting
    is_gradient_checkpointing = False
    _modules: dict = {}  # no submodules: accelerate's unwrapping (TRL asks it when peft is installed) looks here

    def __init__(self, token_logps: torch.Tensor, log_sum_sq_probs: torch.Tensor | None = None):
        self.token_logps = token_logps
        self.log_sum_sq_probs = torch.zeros_like(token_logps) if log_sum_sq_probs is None else log_sum_sq_probs

    def __call__(self, **kwargs) -> SimpleNamespace:
        zeros = torch.zeros_like(self.token_logps)
        return SimpleNamespace(
            log_probs=self.token_logps,
            entropy=zeros,
            mean_logits=zeros,
            is_top1=zeros.bool(),
            log_sum_sq_probs=self.log_sum_sq_probs,
            aux_loss=None,
        )


def trl_dpo_loss(batch: Batch, loss_type: str | list[str], *, beta: float, **config) -> float:
    """TRL 1.16's DPOTrainer batch loss for `batch`, from its own `_compute_loss`."""
    loss_types = [loss_type] if isinstance(loss_type, str) else list(loss_type)
    policy = batch.policy_model()
    trainer = SimpleNamespace(
        model=policy,
        ref_model=batch.reference_model(),
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x, gather=lambda x: x),
        args=SimpleNamespace(gradient_checkpointing_kwargs=None, discopop_tau=config.pop("discopop_tau", 0.05)),
        aux_loss_enabled=False,
        precompute_ref_logps=False,
        beta=beta,
        loss_types=loss_types,
        loss_weights=config.pop("loss_weights", [1.0] * len(loss_types)),
        label_smoothing=config.pop("label_smoothing", 0.0),
        ld_alpha=config.pop("ld_alpha", None),
        f_divergence_type=config.pop("f_divergence_type", "reverse_kl"),
        f_alpha_divergence_coef=config.pop("f_alpha_divergence_coef", 0.5),
        use_weighting=config.pop("use_weighting", False),
        _metrics=defaultdict(lambda: defaultdict(list)),
        _total_train_tokens=0,
        _tp_size=1,
    )
    assert not config, f"unknown TRL settings {config}"
    with torch.no_grad():
        return float(DPOTrainer._compute_loss(trainer, policy, batch.trl_inputs(), return_outputs=False))


def ours(name: str, batch: Batch, **hparams) -> float:
    return float(get_loss(name)(batch.ours(), **hparams).losses.mean())


def check(name: str, batch: Batch, hparams: dict, loss_type, trl_beta: float, **trl_config) -> None:
    expected = torch.tensor(trl_dpo_loss(batch, loss_type, beta=trl_beta, **trl_config))
    torch.testing.assert_close(torch.tensor(ours(name, batch, **hparams)), expected, **TOL)


# ---------------------------------------------------------------------------------------------
# DPOTrainer loss types
# ---------------------------------------------------------------------------------------------

# (our name, our hyper-parameters, TRL loss_type, TRL beta, other TRL settings)
CASES = [
    ("dpo", {"beta": 0.1}, "sigmoid", 0.1, {}),
    ("dpo", {"beta": 0.7}, "sigmoid", 0.7, {}),
    ("tr_dpo", {"beta": 0.3}, "sigmoid", 0.3, {}),
    ("ipo", {"tau": 0.1, "length_normalize": True}, "ipo", 0.1, {}),
    ("ipo", {"tau": 0.5, "length_normalize": True}, "ipo", 0.5, {}),
    ("rdpo", {"beta": 0.1, "epsilon": 0.1}, "robust", 0.1, {"label_smoothing": 0.1}),
    ("rdpo", {"beta": 0.5, "epsilon": 0.3}, "robust", 0.5, {"label_smoothing": 0.3}),
    ("exo_pair", {"beta": 0.1, "epsilon": 1e-3}, "exo_pair", 0.1, {"label_smoothing": 1e-3}),
    ("exo_pair", {"beta": 0.5, "epsilon": 0.2}, "exo_pair", 0.5, {"label_smoothing": 0.2}),
    ("nca_pair", {"beta": 0.1}, "nca_pair", 0.1, {}),
    ("nca_pair", {"beta": 1.0}, "nca_pair", 1.0, {}),
    ("bco_pair", {"beta": 0.1, "reward_shift": False}, "bco_pair", 0.1, {}),
    ("bco_pair", {"beta": 1.0, "reward_shift": False}, "bco_pair", 1.0, {}),
    ("sppo_hard", {"beta": 0.1, "halve": False}, "sppo_hard", 0.1, {}),
    ("sppo_hard", {"beta": 1e-3, "halve": False}, "sppo_hard", 1e-3, {}),
    ("rso_hinge", {"beta": 0.1}, "hinge", 0.1, {}),
    ("rso_hinge", {"beta": 1.0}, "hinge", 1.0, {}),
    ("sft", {"reduction": "token"}, "sft", 0.1, {}),
    (
        "dpo+bco_pair+sft",
        {"dpo.weight": 0.8, "dpo.beta": 0.5, "bco_pair.weight": 0.2, "bco_pair.beta": 0.5,
         "bco_pair.reward_shift": False, "sft.weight": 1.0},
        ["sigmoid", "bco_pair", "sft"],
        0.5,
        {"loss_weights": [0.8, 0.2, 1.0]},
    ),
    ("apo_zero", {"beta": 0.1}, "apo_zero", 0.1, {}),
    ("apo_zero", {"beta": 1.0}, "apo_zero", 1.0, {}),
    ("apo_down", {"beta": 0.1}, "apo_down", 0.1, {}),
    ("apo_down", {"beta": 1.0}, "apo_down", 1.0, {}),
    ("aot", {"beta": 0.1, "variant": "paired"}, "aot", 0.1, {}),
    ("aot", {"beta": 1.0, "variant": "paired"}, "aot", 1.0, {}),
    ("aot", {"beta": 0.1, "variant": "unpaired"}, "aot_unpaired", 0.1, {}),
    ("aot", {"beta": 1.0, "variant": "unpaired"}, "aot_unpaired", 1.0, {}),
    ("discopop", {"beta": 0.05, "tau": 0.05}, "discopop", 0.05, {"discopop_tau": 0.05}),
    ("discopop", {"beta": 0.5, "tau": 0.2}, "discopop", 0.5, {"discopop_tau": 0.2}),
    ("ln_dpo", {"beta": 0.1}, "sigmoid_norm", 0.1, {}),
    ("ln_dpo", {"beta": 2.0}, "sigmoid_norm", 2.0, {}),
    ("ld_dpo", {"beta": 0.1, "alpha": 0.5}, "sigmoid", 0.1, {"ld_alpha": 0.5}),
    ("ld_dpo", {"beta": 1.0, "alpha": 0.0}, "sigmoid", 1.0, {"ld_alpha": 0.0}),
    ("f_dpo", {"beta": 0.1, "divergence": "forward_kl"}, "sigmoid", 0.1, {"f_divergence_type": "forward_kl"}),
    ("f_dpo", {"beta": 0.1, "divergence": "js_divergence"}, "sigmoid", 0.1, {"f_divergence_type": "js_divergence"}),
    (
        "f_dpo",
        {"beta": 0.1, "divergence": "alpha_divergence", "alpha": 0.3},
        "sigmoid",
        0.1,
        {"f_divergence_type": "alpha_divergence", "f_alpha_divergence_coef": 0.7},
    ),
    (
        "f_dpo",
        {"beta": 0.5, "divergence": "alpha_divergence", "alpha": 0.5},
        "sigmoid",
        0.5,
        {"f_divergence_type": "alpha_divergence", "f_alpha_divergence_coef": 0.5},
    ),
    ("wpo", {"beta": 0.1, "clamp_weight": False}, "sigmoid", 0.1, {"use_weighting": True}),
    ("wpo", {"beta": 1.0, "clamp_weight": False}, "sigmoid", 1.0, {"use_weighting": True}),
]


def _case_id(case) -> str:
    name, hparams, loss_type, *_ = case
    return f"{name}[{','.join(f'{k}={v}' for k, v in hparams.items())}]~{loss_type}"


@pytest.mark.parametrize("case", CASES, ids=[_case_id(c) for c in CASES])
@pytest.mark.parametrize("seed", SEEDS)
def test_matches_trl_dpo_trainer_batch_mean(case, seed):
    name, hparams, loss_type, trl_beta, trl_config = case
    check(name, Batch(seed), hparams, loss_type, trl_beta, **trl_config)


PER_EXAMPLE = [case for case in CASES if case[0] != "aot"]  # AOT's losses belong to quantiles


@pytest.mark.parametrize("case", PER_EXAMPLE, ids=[_case_id(c) for c in PER_EXAMPLE])
def test_matches_trl_dpo_trainer_per_example(case):
    """TRL returns only the batch mean: feed it one pair at a time to compare each example."""
    name, hparams, loss_type, trl_beta, trl_config = case
    for seed in range(4):
        check(name, Batch(seed=100 + seed, batch=1), hparams, loss_type, trl_beta, **trl_config)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 0.25])
def test_rpo_matches_trl_sigmoid_plus_sft(alpha):
    """TRL 1.16's RPO: loss_type=["sigmoid", "sft"], loss_weights=[1, α]. Its "sft" averages
    over all chosen tokens of the batch, ours per example: equal on equal-length completions."""
    for seed in SEEDS:
        check(
            "rpo",
            Batch(seed, equal_lengths=5),
            {"beta": 0.1, "alpha": alpha},
            ["sigmoid", "sft"],
            0.1,
            loss_weights=[1.0, alpha],
        )


def test_rpo_differs_from_trl_sft_on_unequal_lengths():
    """Documents the disagreement: per-example vs batch token-mean NLL."""
    batch = Batch(seed=3)
    ours_value = ours("rpo", batch, beta=0.1, alpha=1.0)
    trl_value = trl_dpo_loss(batch, ["sigmoid", "sft"], beta=0.1, loss_weights=[1.0, 1.0])
    assert abs(ours_value - trl_value) > 1e-4


def test_f_dpo_alpha_is_flipped_relative_to_trl():
    """TRL ≥ 0.29's f_alpha_divergence_coef = 1 − our (the paper's) α; the same number differs."""
    batch = Batch(seed=4)
    ours_value = ours("f_dpo", batch, divergence="alpha_divergence", alpha=0.3)
    def trl(coef: float) -> float:
        return trl_dpo_loss(batch, "sigmoid", beta=0.1, f_divergence_type="alpha_divergence", f_alpha_divergence_coef=coef)

    same_number, flipped = trl(0.3), trl(0.7)
    assert abs(ours_value - same_number) > 1e-4
    assert abs(ours_value - flipped) < 1e-5


# ---------------------------------------------------------------------------------------------
# trl.experimental: CPOTrainer (cpo, simpo) and ORPOTrainer (orpo), driven from fixed logits
# ---------------------------------------------------------------------------------------------


class LogitsLM:
    """Stands in for a causal LM returning fixed logits (2B, S, V)."""

    def __init__(self, logits: torch.Tensor):
        self.logits = logits

    def __call__(self, input_ids, attention_mask=None, **kwargs) -> SimpleNamespace:
        return SimpleNamespace(logits=self.logits)


def sequence_batch(seed: int, pairs: int = 4, vocab: int = 11, length: int = 8, equal_lengths: bool = False):
    """Token ids of [one prompt token, completion, padding] for chosen and rejected, labels with
    the prompt and padding at -100, and random logits over the concatenated [chosen; rejected]."""
    g = torch.Generator().manual_seed(seed)
    rows = {}
    for side in ("chosen", "rejected"):
        completion = (
            torch.full((pairs,), length - 1)
            if equal_lengths
            else torch.randint(1, length, (pairs,), generator=g)
        )
        ids = torch.randint(1, vocab, (pairs, length), generator=g)
        attention = (torch.arange(length).unsqueeze(0) < 1 + completion.unsqueeze(1)).long()
        ids = ids * attention
        labels = ids.masked_fill(attention == 0, -100)
        labels[:, 0] = -100  # the prompt token
        rows.update({f"{side}_input_ids": ids, f"{side}_attention_mask": attention, f"{side}_labels": labels})
    logits = 3.0 * torch.randn(2 * pairs, length, vocab, generator=g)
    return rows, logits


def our_inputs_from_logits(rows: dict, logits: torch.Tensor) -> LossInputs:
    """Summed completion log-probs and lengths, computed our way from the same logits."""
    pairs = rows["chosen_labels"].size(0)
    labels = torch.cat([rows["chosen_labels"], rows["rejected_labels"]])[:, 1:]
    mask = labels != -100
    token_logps = torch.gather(F.log_softmax(logits[:, :-1], dim=-1), 2, labels.clamp(min=0).unsqueeze(2)).squeeze(2)
    sums, lengths = (token_logps * mask).sum(dim=1), mask.sum(dim=1).float()
    return LossInputs(
        policy_chosen_logps=sums[:pairs],
        policy_rejected_logps=sums[pairs:],
        chosen_lengths=lengths[:pairs],
        rejected_lengths=lengths[pairs:],
    )


def experimental_trainer(trainer_cls, **attributes) -> SimpleNamespace:
    """A stand-in `self` for CPOTrainer/ORPOTrainer methods, with their methods bound to it."""
    fake = SimpleNamespace(
        is_encoder_decoder=False,
        pad_token_id=0,
        padding_value=0,
        aux_loss_enabled=False,
        label_smoothing=0.0,
        accelerator=SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda x: x),
        concatenated_inputs=trainer_cls.concatenated_inputs,
        get_batch_logps=trainer_cls.get_batch_logps,
        **attributes,
    )
    for method in ("concatenated_forward", "cpo_loss", "odds_ratio_loss"):
        if hasattr(trainer_cls, method):
            setattr(fake, method, types.MethodType(getattr(trainer_cls, method), fake))
    return fake


def trl_experimental_loss(trainer_cls, rows, logits, **attributes) -> float:
    fake = experimental_trainer(trainer_cls, **attributes)
    with torch.no_grad():
        loss, _ = trainer_cls.get_batch_loss_metrics(fake, LogitsLM(logits), rows)
    return float(loss)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta, ratio", [(2.0, 0.5), (10.0, 0.3)])
def test_simpo_matches_trl_cpo_trainer(seed, beta, ratio):
    """SimPO via CPOTrainer(loss_type="simpo", simpo_gamma=γ, cpo_alpha=0); TRL's γ is absolute,
    ours the ratio γ/β. Unequal lengths: both average log-probs per example."""
    cpo_trainer = pytest.importorskip("trl.experimental.cpo").CPOTrainer
    rows, logits = sequence_batch(seed)
    expected = trl_experimental_loss(
        cpo_trainer, rows, logits, loss_type="simpo", beta=beta, simpo_gamma=beta * ratio, cpo_alpha=0.0, alpha=0.0
    )
    actual = get_loss("simpo")(our_inputs_from_logits(rows, logits), beta=beta, gamma_beta_ratio=ratio).losses.mean()
    torch.testing.assert_close(actual, torch.tensor(expected), **TOL)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("beta, alpha", [(0.1, 1.0), (0.5, 0.0), (0.1, 0.3)])
def test_cpo_matches_trl_cpo_trainer(seed, beta, alpha):
    """CPO via CPOTrainer(loss_type="sigmoid", cpo_alpha=α); equal completion lengths because
    TRL's NLL is a token-mean over the batch."""
    cpo_trainer = pytest.importorskip("trl.experimental.cpo").CPOTrainer
    rows, logits = sequence_batch(seed, equal_lengths=True)
    expected = trl_experimental_loss(
        cpo_trainer, rows, logits, loss_type="sigmoid", beta=beta, cpo_alpha=alpha, alpha=0.0
    )
    actual = get_loss("cpo")(our_inputs_from_logits(rows, logits), beta=beta, alpha=alpha).losses.mean()
    torch.testing.assert_close(actual, torch.tensor(expected), **TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_cpo_preference_term_matches_trl_per_example(seed):
    """The preference term alone, per example and on unequal lengths (cpo_loss returns (B,))."""
    cpo_trainer = pytest.importorskip("trl.experimental.cpo").CPOTrainer
    rows, logits = sequence_batch(seed)
    inputs = our_inputs_from_logits(rows, logits)
    fake = experimental_trainer(cpo_trainer, loss_type="sigmoid", beta=0.1, cpo_alpha=0.0, alpha=0.0)
    expected, _, _ = fake.cpo_loss(inputs.policy_chosen_logps, inputs.policy_rejected_logps)
    torch.testing.assert_close(get_loss("cpo")(inputs, beta=0.1, alpha=0.0).losses, expected, **TOL)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("lambda_", [0.1, 1.0])
def test_orpo_matches_trl_orpo_trainer(seed, lambda_):
    """ORPO via ORPOTrainer(beta=λ). TRL's NLL covers prompt and completion; with a one-token
    prompt (never a prediction target) and equal completion lengths it equals ours."""
    orpo_trainer = pytest.importorskip("trl.experimental.orpo").ORPOTrainer
    rows, logits = sequence_batch(seed, equal_lengths=True)
    expected = trl_experimental_loss(orpo_trainer, rows, logits, beta=lambda_)
    actual = get_loss("orpo")(our_inputs_from_logits(rows, logits), lambda_=lambda_).losses.mean()
    torch.testing.assert_close(actual, torch.tensor(expected), **TOL)


@pytest.mark.parametrize("seed", SEEDS)
def test_orpo_odds_ratio_term_matches_trl_per_example(seed):
    """The odds-ratio term alone, per example, unequal lengths: TRL's odds_ratio_loss returns
    λ·log σ(log odds ratio) (B,), i.e. minus our λ·or_loss."""
    orpo_trainer = pytest.importorskip("trl.experimental.orpo").ORPOTrainer
    rows, logits = sequence_batch(seed)
    inputs = our_inputs_from_logits(rows, logits)
    fake = experimental_trainer(orpo_trainer, beta=0.1)
    chosen_mean = inputs.policy_chosen_logps / inputs.chosen_lengths
    rejected_mean = inputs.policy_rejected_logps / inputs.rejected_lengths
    trl_losses, *_ = fake.odds_ratio_loss(chosen_mean, rejected_mean)
    out = get_loss("orpo")(inputs, lambda_=0.1)
    torch.testing.assert_close(0.1 * out.metrics["or_loss"], -trl_losses, **TOL)
