"""The report's "Sampling and reproducibility" section, from the run manifests alone: how every
sample was drawn (temperature, top-k, top-p, length, seed), and the fingerprints of what shaped
the runs (start model, tokenizer, data files, evaluation prompts, libraries, hardware), grouped so
that a reader sees at once whether every run of the suite was computed in the same world.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from harness.fingerprint import fingerprint_differences
from harness.report.html import Cell, esc, table

REPRODUCIBILITY_TEXT = (
    "A fingerprint hashes the content of what shaped a run: the start model's weights, the tokenizer, "
    "each data file, the evaluation prompts, the library versions and the hardware. Runs with equal "
    "fingerprints and equal settings give bit-identical numbers on one machine; `harness verify "
    "SUITE --runs K` re-runs stored runs and checks it. Float results differ between CPUs, GPUs and "
    "library versions, and those differences grow through training."
)


def sampling_text(params: dict[str, Any]) -> str:
    """One phrase for a manifest's sampling entry, e.g. "temperature 1.0, top-k off, top-p 1.0
    (the model's own distribution), at most 24 new tokens, seed 1234"."""
    top_k = params.get("top_k")
    parts = [f"temperature {params.get('temperature', '?')}", "top-k off" if top_k == 0 else f"top-k {top_k}",
             f"top-p {params.get('top_p', '?')}"]
    own = params.get("temperature") == 1.0 and top_k == 0 and params.get("top_p") == 1.0
    text = ", ".join(parts) + (" (the model's own distribution)" if own else " (truncated or tempered: KL "
                                                                           "estimates assume samples from π)")
    if "max_new_tokens" in params:
        text += f", at most {params['max_new_tokens']} new tokens"
    if "seed" in params:
        text += f", seed {params['seed']}"
    return text


def _sampling_lines(manifests: dict[str, dict[str, Any]]) -> list[str]:
    """Per kind of sampling (evaluation, the sandbox's data, training generation), each distinct
    setting with the number of runs that used it."""
    titles = {"evaluation": "Evaluation samples (policy and start baseline)",
              "sandbox_data": "The sandbox's preference data, sampled from its SFT model",
              "training_generation": "Generation during training (SPIN's gen_* settings)"}
    lines = []
    for kind, title in titles.items():
        settings = Counter()
        for manifest in manifests.values():
            params = (manifest.get("sampling") or {}).get(kind)
            if params:
                if kind == "training_generation":
                    params = {k.removeprefix("gen_"): v for k, v in params.items()}
                settings[tuple(sorted(params.items()))] += 1
        for params, runs in settings.items():
            lines.append(f"{title}: {sampling_text(dict(params))} ({runs} run{'s' if runs != 1 else ''}).")
    return lines + _lm_eval_lines(manifests)


def _lm_eval_lines(manifests: dict[str, dict[str, Any]]) -> list[str]:
    """How lm-eval prompted the models (the suite's evaluate.lm_eval_chat_template, resolved)."""
    settings = Counter((m["lm_eval"]["chat_template_setting"], m["lm_eval"]["apply_chat_template"])
                       for m in manifests.values() if isinstance(m.get("lm_eval"), dict))
    lines = []
    for (setting, chat), runs in settings.items():
        how = ("through the start model's chat template, few-shot examples as turns" if chat
               else "as plain text, no chat template")
        lines.append(f"lm-eval prompts: {how} (evaluate.lm_eval_chat_template: {setting}; "
                     f"{runs} run{'s' if runs != 1 else ''}).")
    return lines


def _training_lines(manifests: dict[str, dict[str, Any]]) -> list[str]:
    """Which kind of fine-tune each trained run was (full, LoRA, QLoRA), in which precision, with
    the number of runs of each; manifests written before these were recorded give no line."""
    kinds = Counter()
    for manifest in manifests.values():
        training = manifest.get("training")
        if training:
            peft = training.get("peft")
            adapters = f" (r {peft['r']}, alpha {peft['alpha']:g}, on {', '.join(peft['target_modules'])})" if peft else ""
            checkpointed = ", gradient checkpointing" if training.get("gradient_checkpointing") else ""
            kinds[f"{training['fine_tuning']}{adapters}, {training['precision']}{checkpointed}"] += 1
    return [f"Fine-tuning: {kind} ({runs} run{'s' if runs != 1 else ''})." for kind, runs in kinds.items()]


def reproducibility_html(manifests: dict[str, dict[str, Any]]) -> str:
    """The section's HTML: sampling lines, then one row per distinct fingerprint."""
    out = [f"<p>{esc(line)}</p>" for line in _sampling_lines(manifests) + _training_lines(manifests)]
    groups: dict[str, list[str]] = {}
    prints: dict[str, dict[str, Any]] = {}
    missing = 0
    for run_id, manifest in sorted(manifests.items()):
        fingerprint = manifest.get("fingerprint")
        if not isinstance(fingerprint, dict) or "digest" not in fingerprint:
            missing += 1
            continue
        groups.setdefault(fingerprint["digest"], []).append(run_id)
        prints[fingerprint["digest"]] = fingerprint
    if prints:
        headers = [("fingerprint", True), ("runs", False), ("start model", True), ("tokenizer", True),
                   ("data files", True), ("eval prompts", True), ("libraries", True), ("hardware", True)]
        rows = []
        for digest, runs in groups.items():
            f = prints[digest]
            data = "; ".join(f"{k} {v}" for k, v in sorted((f.get("data") or {}).items()))
            libraries = ", ".join(f"{k} {v}" for k, v in (f.get("libraries") or {}).items())
            hw = f.get("hardware") or {}
            machine = ", ".join(str(hw[k]) for k in ("device", "gpu", "cpu", "torch_threads") if hw.get(k) is not None)
            rows.append(("", [Cell(digest, digest, True), Cell(str(len(runs)), repr(float(len(runs)))),
                              *(Cell(str(f.get(k, "–")), str(f.get(k, "")), True)
                                for k in ("start_model", "tokenizer")),
                              Cell(data, data, True), Cell(str(f.get("eval_prompts", "–")), "", True),
                              Cell(libraries, libraries, True), Cell(machine, machine, True)]))
        out.append(table(headers, rows))
    if len(prints) > 1:
        first, *others = list(prints.values())
        differing = ", ".join(sorted({d for other in others for d in fingerprint_differences(first, other)}))
        note = (f"The runs of this suite have {len(prints)} different fingerprints (they differ in {differing}): "
                "their numbers are comparable, but not reproducible bit for bit across groups.")
        out.append(f'<div class="note">{esc(note)}</div>')
    if missing:
        out.append(f'<p class="muted">{missing} run{"s were" if missing != 1 else " was"} stored before '
                   "runs carried fingerprints.</p>")
    out.append(f'<p class="muted">{esc(REPRODUCIBILITY_TEXT)}</p>')
    return "\n".join(out)
