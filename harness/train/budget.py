"""The compute budget of one run and its accounting.

A step's cost is known before it runs (its sequences' lengths and which passes the loss needs),
so the loop stops at the last step that fits: a run never exceeds its budget. The same per-step
amounts give the forecast (`forecast`) that sizes the learning-rate schedule, is printed before
training and estimates `harness plan`'s steps and times.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from harness.suite import Budget


@dataclass
class StepCost:
    """What one optimizer step consumes."""

    examples: int
    policy_tokens: int
    reference_tokens: int = 0
    flops_policy: float = 0.0
    flops_reference: float = 0.0
    flops_generation: float = 0.0
    flops_recomputed: float = 0.0  # gradient checkpointing's second forward: hardware work, not budget

    @property
    def flops(self) -> float:
        return self.flops_policy + self.flops_reference + self.flops_generation

    @staticmethod
    def mean(costs: list[StepCost]) -> StepCost:
        """The average step of `costs` (its counts are then fractional)."""
        n = len(costs)
        return StepCost(**{k: sum(getattr(c, k) for c in costs) / n for k in asdict(costs[0])})


@dataclass
class Accounting:
    """Everything a run consumed; stored in the run's accounting columns."""

    optimizer_steps: int = 0
    examples_seen: int = 0
    policy_tokens: int = 0
    reference_tokens: int = 0
    generated_tokens: int = 0
    flops_policy: float = 0.0
    flops_reference: float = 0.0
    flops_generation: float = 0.0
    flops_recomputed: float = 0.0  # not in flops_total: the budget and MFU count the method's work only

    @property
    def flops_total(self) -> float:
        return self.flops_policy + self.flops_reference + self.flops_generation

    def add(self, cost: StepCost) -> None:
        self.optimizer_steps += 1
        self.examples_seen += cost.examples
        self.policy_tokens += cost.policy_tokens
        self.reference_tokens += cost.reference_tokens
        self.flops_policy += cost.flops_policy
        self.flops_reference += cost.flops_reference
        self.flops_generation += cost.flops_generation
        self.flops_recomputed += cost.flops_recomputed

    def used(self, kind: str) -> float:
        """How much of a budget of this kind has been used."""
        return {
            "flops": self.flops_total,
            "tokens": float(self.policy_tokens),
            "examples": float(self.examples_seen),
            "steps": float(self.optimizer_steps),
        }[kind]

    def as_counts(self) -> dict:
        """The counters alone (the constructor's arguments), for copies and checkpoints."""
        out = asdict(self)
        return out

    def plus(self, other: Accounting) -> Accounting:
        """The sum of two accountings (a regime adds its phases up)."""
        mine, theirs = self.as_counts(), other.as_counts()
        return Accounting(**{k: mine[k] + theirs[k] for k in mine})


def step_amount(cost: StepCost, kind: str) -> float:
    return {
        "flops": cost.flops,
        "tokens": float(cost.policy_tokens),
        "examples": float(cost.examples),
        "steps": 1.0,
    }[kind]


def fits(accounting: Accounting, cost: StepCost, budget: Budget) -> bool:
    """Whether the step can run without exceeding the budget."""
    return accounting.used(budget.kind) + step_amount(cost, budget.kind) <= budget.value * (1 + 1e-12)


@dataclass(frozen=True)
class Forecast:
    """What a phase's budget buys: the expected optimizer steps and the cost of an average step."""

    steps: int
    step: StepCost

    @property
    def flops(self) -> float:
        return self.steps * self.step.flops

    def describe(self) -> str:
        """One line, printed before training (as nanochat prints its iteration count and FLOPs)."""
        s = self.step
        return (f"~{self.steps} optimizer steps; each ~{s.examples:.0f} examples, ~{s.policy_tokens:,.0f} policy "
                f"tokens, {s.flops:.3g} FLOPs (policy {s.flops_policy:.3g}, reference {s.flops_reference:.3g})")


def forecast(costs: list[StepCost], budget: Budget, spent: Accounting) -> Forecast:
    """Expected optimizer steps under `budget` once `spent` is used, from the costs of a sample of
    steps: what is left divided by the mean per-step amount (`step_amount`, as the stop rule
    counts), at least one; a steps budget is its own count."""
    per_step = sum(step_amount(c, budget.kind) for c in costs) / len(costs)
    if budget.kind == "steps":
        steps = int(budget.value)
    else:
        steps = max(int((budget.value - spent.used(budget.kind)) // per_step), 1)
    return Forecast(steps, StepCost.mean(costs))
