"""Real scale: the memory model (harness.memory) and the device checks, precision, gradient
checkpointing, LoRA, and the model lifetimes, on CPU."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from harness.errors import HarnessError
from harness.memory import GIB, Architecture, Device, Lora, RunShape, model_config, predict
from harness.plan import plan_suite
from harness.suite import load_suite
from harness.train.flops import ModelShape
from tests.test_train_engine import parameters, spec_for, world_and_suite  # noqa: F401 (the fixture)

MISTRAL = "mistralai/Mistral-7B-v0.1"


def mistral() -> Architecture:
    return Architecture.from_config(model_config(MISTRAL))


def test_the_shipped_configs_give_the_published_parameter_counts():
    """Mistral-7B-v0.1: 7,241,732,096; Llama-3-8B: 8,030,261,248 (their model cards)."""
    assert mistral().parameters() == 7_241_732_096
    llama = Architecture.from_config(model_config("meta-llama/Meta-Llama-3-8B-Instruct"))
    assert llama.parameters() == 8_030_261_248
    reward = Architecture.from_config(model_config("Skywork/Skywork-Reward-Llama-3.1-8B-v0.2"))
    assert reward.classifier and reward.parameters() == llama.parameters() - llama.vocab * llama.hidden + llama.hidden


def shape(**changes) -> RunShape:
    base = RunShape(micro_batch=4, rows_per_example=2, max_length=1024, precision="bf16-mixed", device_type="cuda",
                    eval_length=1536)
    return replace(base, **changes)


def test_a_full_fine_tune_costs_16_bytes_per_parameter_plus_autocasts_copy():
    """fp32 master weights, gradients and two AdamW moments (16 bytes) and autocast's bf16 copy (2)."""
    t = predict(mistral(), shape()).training
    n = mistral().parameters()
    assert t["master_weights"] + t["gradients"] + t["optimizer_states"] == 16 * n
    assert t["trained_weights"] == 2 * n
    pure = predict(mistral(), shape(precision="bf16")).training
    assert pure["master_weights"] == 0 and pure["optimizer_states"] == 4 * n


def test_checkpointing_lora_and_nf4_each_lower_the_peak():
    arch = mistral()
    full = predict(arch, shape())
    checkpointed = predict(arch, shape(checkpointing=True))
    assert checkpointed.training["activations"] < full.training["activations"] / 10
    lora = predict(arch, shape(checkpointing=True, lora=Lora(16, tuple(arch.layer_linear_parameters()))))
    qlora = predict(arch, shape(checkpointing=True, lora=Lora(16, tuple(arch.layer_linear_parameters())),
                                quantize="nf4"))
    assert full.training_peak > checkpointed.training_peak > lora.training_peak > qlora.training_peak
    # a live reference is a frozen bf16 copy; a LoRA's reference is its own base (no copy)
    assert predict(arch, shape(live_reference=True)).training["frozen_weights"] == 2 * arch.parameters()
    targets = Lora(16, tuple(arch.layer_linear_parameters()))
    live = predict(arch, shape(checkpointing=True, lora=targets, live_reference=True))
    assert live.training["frozen_weights"] == lora.training["frozen_weights"] == 2 * arch.parameters()
    assert qlora.training_peak < 80 * GIB * 0.9 < full.training_peak


def test_lora_flops_follow_litgpts_rule():
    """4·N·T + 6·N_lora·T per step (attention aside): more LoRA steps fit one FLOP budget."""
    arch = mistral()
    lora = Lora(16, ("q_proj", "v_proj"))
    full, adapted = ModelShape.of_architecture(arch), ModelShape.of_architecture(arch, lora)
    tokens = [512, 512]
    n_lora = arch.lora_parameters(16, lora.targets)
    attention = 3 * 4.0 * arch.layers * arch.q_width * sum(t * t for t in tokens)
    assert adapted.train_flops(tokens) == pytest.approx(4 * adapted.matmul_params * 1024 + 2 * n_lora * 1024
                                                        + attention)
    assert adapted.train_flops(tokens) < 0.75 * full.train_flops(tokens)


def test_run_ids_change_only_when_a_new_setting_is_changed():
    suite = load_suite("suites/quickstart.yaml")
    ids = [s.run_id for s in plan_suite(suite)]
    # FSDP over 2 computes the same micro-batches and update, up to float rounding (test_distributed)
    same = ["train.precision=auto", "train.gradient_checkpointing=true", "train.peft.r=0", "hardware.gpus=2",
            "train.distributed.strategy=fsdp", "train.distributed.gpus=2"]
    assert [s.run_id for s in plan_suite(load_suite("suites/quickstart.yaml", same))] == ids
    for changed in (["train.precision=fp32"], ["train.peft.r=4"]):
        trained = [s.run_id for s in plan_suite(load_suite("suites/quickstart.yaml", changed)) if s.trains]
        assert not set(trained) & set(ids)


def test_run_refuses_a_run_that_does_not_fit_naming_what_would(monkeypatch, tmp_path):
    from harness.train import sizing

    suite = load_suite("suites/insights-mistral-7b.yaml", ["train.distributed.strategy=none"])  # a replica per GPU
    specs = plan_suite(suite)
    monkeypatch.setattr(sizing, "visible_device", lambda: Device("NVIDIA H100 80GB HBM3", 80 * GIB, 8))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    with pytest.raises(HarnessError, match=r"run dpo \(\w{12}\) needs .* fits with: .*train.peft"):
        sizing.check_devices(suite, specs)
    lora = load_suite("suites/insights-mistral-7b.yaml", ["train.distributed.strategy=none", "train.peft.r=16"])
    sizing.check_devices(lora, plan_suite(lora))


def test_more_fsdp_gpus_than_visible_is_one_line_before_work(monkeypatch, tmp_path, capsys):
    """train.distributed.gpus = 8 with 4 GPUs visible: exit status 2 and one line naming the key,
    before anything loads (on CPU, gpus: N is N gloo processes: not refused)."""
    from harness.cli import main
    from harness.train import sizing

    monkeypatch.setattr(sizing, "visible_device", lambda: Device("NVIDIA H100 80GB HBM3", 80 * GIB, 4))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    sets = ["--set", "train.distributed.strategy=fsdp", "--set", "train.distributed.gpus=8"]
    assert main(["run", "suites/insights-mistral-7b.yaml", *sets, "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "train.distributed.gpus = 8 but 4 GPU(s) are visible" in err
    assert not any(tmp_path.iterdir())


def test_fsdp_fits_the_full_fine_tune_per_gpu_and_is_named_as_a_fix(monkeypatch):
    """The memory model is per GPU: FSDP over 8 divides the trained weights, master weights,
    gradients and AdamW moments by 8 and nothing else; a refusal on 8 visible GPUs names it."""
    from harness.train import sizing

    suite = load_suite("suites/insights-mistral-7b.yaml", ["train.distributed.strategy=none"])
    spec = next(s for s in plan_suite(suite) if s.method == "dpo")
    one, eight = sizing.predict_run(spec, suite, "cuda"), sizing.predict_run(spec, suite, "cuda", shards=8)
    sharded = ("trained_weights", "master_weights", "gradients", "optimizer_states")
    assert all(eight.training[k] == pytest.approx(one.training[k] / 8) for k in sharded)
    assert all(eight.training[k] == one.training[k] for k in one.training if k not in sharded)
    fsdp = load_suite("suites/insights-mistral-7b.yaml", ["train.distributed.strategy=fsdp",
                                                          "train.distributed.gpus=8"])
    assert sizing.predict_run(next(s for s in plan_suite(fsdp) if s.method == "dpo"), fsdp, "cuda").training == \
        eight.training
    monkeypatch.setattr(sizing, "visible_device", lambda: Device("NVIDIA H100 80GB HBM3", 80 * GIB, 8))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    with pytest.raises(HarnessError, match=r"fits with: train.distributed=\{strategy: fsdp, gpus: 8\}"):
        sizing.check_devices(suite, plan_suite(suite))
    sizing.check_devices(fsdp, plan_suite(fsdp))


def test_bf16_on_a_gpu_without_it_is_refused(monkeypatch):
    from harness.train import sizing

    monkeypatch.setattr(sizing, "visible_device", lambda: Device("Tesla V100", 32 * GIB, 1))
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: False)
    suite = load_suite("suites/quickstart.yaml")
    with pytest.raises(HarnessError, match="train.precision = 'auto' computes in bf16.*set train.precision=fp32"):
        sizing.check_devices(suite, [])
    sizing.check_devices(load_suite("suites/quickstart.yaml", ["train.precision=fp32"]), [])


def test_plan_prints_each_runs_peak_and_gpu_hours_offline(capsys):
    from harness.cli import main

    assert main(["plan", "suites/simpo-llama3-8b-instruct.yaml", "--set", "train.peft.r=16"]) == 0
    out = capsys.readouterr().out
    assert "memory per device on 8× H100 (80 GiB each) (hardware: in the suite)" in out
    assert "40% MFU" in out
    rows = [line for line in out.splitlines() if " fits " in line and "GiB at" in line]
    assert rows and all("GPU-hours" in r for r in rows if "start" not in r)


# --------------------------------------------------------------------------- training on the sandbox


def test_lora_trains_only_the_adapters_and_evaluates_merged(world_and_suite):
    from harness.runner import _train

    world, suite = world_and_suite
    suite = load_suite(suite.path, ["budget.kind=steps", "budget.value=4", "train.batch_size=4",
                                    "train.peft.r=4", "train.lr=1e-3", "train.gradient_checkpointing=true"])
    spec, suite = spec_for(suite, "dpo")
    before = parameters(world.start_model)
    policy, result = _train(spec, suite, world)
    assert not hasattr(policy, "peft_config"), "evaluation gets the merged model"
    assert type(policy) is type(world.start_model)
    assert not torch.equal(parameters(policy), before)
    assert torch.equal(parameters(world.start_model), before)
    embeddings = policy.get_input_embeddings().weight, world.start_model.get_input_embeddings().weight
    assert torch.equal(*embeddings), "a weight LoRA does not target changed"
    assert result.accounting.flops_recomputed > 0 and all(math.isfinite(r["loss"]) for r in result.curve)


def test_a_live_reference_under_lora_is_the_base_with_adapters_disabled(world_and_suite):
    """KTO reads its reference on every batch: the policy's own base, with no copy of the start model."""
    from harness.runner import _train

    world, suite = world_and_suite
    suite = load_suite(suite.path, ["budget.kind=steps", "budget.value=3", "train.batch_size=4", "train.peft.r=4"])
    spec, suite = spec_for(suite, "kto")
    policy, result = _train(spec, suite, world)
    assert result.accounting.optimizer_steps == 3 and not world.start.loaded


def test_checkpointing_changes_memory_not_results(world_and_suite):
    from harness.runner import _train

    world, suite = world_and_suite
    curves = []
    for checkpointing in ("false", "true"):
        s = load_suite(suite.path, ["budget.kind=steps", "budget.value=3", "train.batch_size=4", "train.log_every=1",
                                    f"train.gradient_checkpointing={checkpointing}"])
        spec, s = spec_for(s, "dpo")
        _, result = _train(spec, s, world)
        curves.append(([r["loss"] for r in result.curve], result.accounting.flops_total,
                       result.accounting.flops_recomputed))
    (plain, flops, none), (checkpointed, same_flops, recomputed) = curves
    assert checkpointed == pytest.approx(plain, rel=1e-5) and flops == same_flops  # not in the budget nor MFU
    assert none == 0 and recomputed > 0


def test_the_start_model_is_released_while_a_cached_reference_run_trains(world_and_suite):
    from harness.runner import _train

    world, suite = world_and_suite
    spec, suite = spec_for(suite, "dpo")
    _train(spec, suite, world)
    assert not world.start.loaded  # DPO's reference sums come from the cache
    assert world.start_model is not None and world.start.loaded  # loaded again for evaluation


def test_pure_bf16_trains_bf16_weights(world_and_suite):
    from harness.runner import _train

    world, suite = world_and_suite
    s = load_suite(suite.path, ["budget.kind=steps", "budget.value=2", "train.batch_size=4", "train.precision=bf16"])
    spec, s = spec_for(s, "dpo")
    policy, result = _train(spec, s, world)
    assert next(policy.parameters()).dtype == torch.bfloat16 and result.accounting.optimizer_steps == 2


def test_a_lora_suite_runs_end_to_end_and_its_report_says_so(tmp_path, harness_cache):
    """`harness run` on the sandbox with LoRA and checkpointing: the device check passes, each
    trained run's manifest records its kind and precision, and the report names them."""
    import json

    from harness.cli import main
    from tests.conftest import tiny_suite_text

    path = tmp_path / "lora.yaml"
    path.write_text(tiny_suite_text(name="lora", methods="[dpo, kto]"))
    results, reports = tmp_path / "results", tmp_path / "reports"
    args = ["run", str(path), "--results", str(results), "--reports", str(reports), "--set", "train.peft.r=4",
            "--set", "train.gradient_checkpointing=true"]
    assert main(args) == 0
    manifests = [json.loads(p.read_text()) for p in (results / "lora").glob("*.json")]
    trained = [m for m in manifests if m["training"]]
    assert len(trained) == 2 and all(m["training"]["fine_tuning"] == "lora" for m in trained)
    assert all(m["training"]["precision"] == "fp32" and m["flops_recomputed"] > 0 for m in trained)
    assert "Fine-tuning: lora (r 4, alpha 16, on all-linear), fp32, gradient checkpointing (2 runs)." in (
        reports / "lora.html").read_text()


def test_a_regime_reading_the_policy_between_steps_is_refused_under_fsdp():
    """TR-DPO syncs its reference from the policy every few steps: FSDP holds it sharded then."""
    from harness.train import sizing

    suite = load_suite("suites/quickstart.yaml", ["methods=[dpo, tr_dpo]", "train.distributed.strategy=fsdp",
                                                  "train.distributed.gpus=2"])
    with pytest.raises(HarnessError, match="method 'tr_dpo' .* without train.distributed"):
        sizing.check_devices(suite, plan_suite(suite))
    plain = load_suite("suites/quickstart.yaml", ["methods=[dpo, tr_dpo]"])
    sizing.check_devices(plain, plan_suite(plain))
