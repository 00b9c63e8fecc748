"""What a built sandbox holds, as numbers (summary.json) and as readable text.

`shape_stats` measures each data file: rows, the label noise (how often the label disagrees with
the gold reward), the flips injected on purpose, and lengths in words (the sandbox tokenizer is
word-level, so words are tokens, BOS/EOS aside). `format_summary` renders the whole summary for
`harness sandbox build|show`.
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from typing import Any

QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)


def _words(text: str) -> int:
    return len(text.split())


def distribution(values: Sequence[float], digits: int = 4) -> dict[str, Any]:
    """n, mean, sd, min, max and the QUANTILES of `values` (linear interpolation)."""
    values = sorted(float(v) for v in values)
    if not values:
        return {"n": 0}
    def q(p: float) -> float:
        pos = p * (len(values) - 1)
        lo = int(pos)
        hi = min(lo + 1, len(values) - 1)
        return values[lo] + (values[hi] - values[lo]) * (pos - lo)
    return {
        "n": len(values),
        "mean": round(statistics.fmean(values), digits),
        "sd": round(statistics.pstdev(values), digits),
        "min": round(values[0], digits),
        "max": round(values[-1], digits),
        "quantiles": {f"{p:g}": round(q(p), digits) for p in QUANTILES},
    }


def lengths(texts: Sequence[str]) -> dict[str, Any]:
    """Length in words: mean, min, median, max."""
    counts = sorted(_words(t) for t in texts)
    if not counts:
        return {"mean": 0.0, "min": 0, "median": 0, "max": 0}
    return {"mean": round(statistics.fmean(counts), 2), "min": counts[0],
            "median": counts[len(counts) // 2], "max": counts[-1]}


def _agreement(pairs: Sequence[tuple[float, float]]) -> dict[str, Any]:
    """Of (score of the preferred, score of the other): how often gold agrees, ties excluded."""
    decided = [(a, b) for a, b in pairs if a != b]
    agree = sum(a > b for a, b in decided)
    share = agree / len(decided) if decided else float("nan")
    return {"gold_agreement": round(share, 4), "label_noise": round(1.0 - share, 4),
            "gold_ties": len(pairs) - len(decided)}


def pair_stats(rows: Sequence[dict]) -> dict[str, Any]:
    stages = Counter(int(r["stage"]) for r in rows if "stage" in r)
    margins_by_stage = {
        str(s): round(statistics.fmean(r["sft_margin"] for r in rows if r["stage"] == s), 3)
        for s in sorted(stages) if all("sft_margin" in r for r in rows)
    }
    return {
        "rows": len(rows),
        **_agreement([(r["score_chosen"], r["score_rejected"]) for r in rows]),
        "flipped": round(sum(bool(r.get("label_flipped")) for r in rows) / max(len(rows), 1), 4),
        "score_margin_mean": round(statistics.fmean(r["score_chosen"] - r["score_rejected"] for r in rows), 4) if rows else 0.0,
        "stages": {str(s): stages[s] for s in sorted(stages)},
        "sft_margin_by_stage": margins_by_stage,
        "lengths": {"prompt": lengths([r["prompt"] for r in rows]), "chosen": lengths([r["chosen"] for r in rows]),
                    "rejected": lengths([r["rejected"] for r in rows])},
    }


def unpaired_stats(rows: Sequence[dict], threshold: float, pool: int) -> dict[str, Any]:
    desirable = sum(bool(r["label"]) for r in rows)
    decided = [r for r in rows if r["score"] != threshold]
    agree = sum((r["score"] > threshold) == bool(r["label"]) for r in decided)
    share = agree / len(decided) if decided else float("nan")
    return {
        "rows": len(rows),
        "desirable": desirable,
        "undesirable": len(rows) - desirable,
        "threshold": round(threshold, 4),
        "pool": pool,
        "gold_agreement": round(share, 4),
        "label_noise": round(1.0 - share, 4),
        "gold_ties": len(rows) - len(decided),
        "flipped": round(sum(bool(r.get("label_flipped")) for r in rows) / max(len(rows), 1), 4),
        "lengths": {"prompt": lengths([r["prompt"] for r in rows]), "completion": lengths([r["completion"] for r in rows])},
    }


def sft_stats(rows: Sequence[dict]) -> dict[str, Any]:
    return {
        "rows": len(rows),
        "session_turns": sum(" | agent :" in r["prompt"] or r["prompt"].startswith("user :") for r in rows),
        "lengths": {"prompt": lengths([r["prompt"] for r in rows]), "completion": lengths([r["completion"] for r in rows])},
    }


def session_stats(rows: Sequence[dict], token_lengths: Sequence[int], max_length: int) -> dict[str, Any]:
    def segment_text(turns: list[dict]) -> str:
        return " ".join(t["content"] for t in turns)

    return {
        "rows": len(rows),
        **_agreement([(r["score_chosen"], r["score_rejected"]) for r in rows]),
        "segment_length": {str(k): v for k, v in sorted(Counter(r["segment_length"] for r in rows).items())},
        "first_bad_turn": {str(k): v for k, v in sorted(Counter(r["first_bad_turn"] for r in rows).items())},
        "lengths": {"prompt": lengths([r["prompt"] for r in rows]),
                    "chosen_segment": lengths([segment_text(r["chosen_turns"]) for r in rows]),
                    "rejected_segment": lengths([segment_text(r["rejected_turns"]) for r in rows])},
        "tokens_max": max(token_lengths, default=0),
        f"over_{max_length}_tokens": sum(n > max_length for n in token_lengths),
    }


# ---------------------------------------------------------------------------------------------
# Text


def _dist_line(d: dict[str, Any]) -> str:
    if not d.get("n"):
        return "no values"
    q = d["quantiles"]
    return (f"mean {d['mean']:+.3f}  sd {d['sd']:.3f}  quantiles 5/25/50/75/95%: "
            + " / ".join(f"{q[k]:+.2f}" for k in ("0.05", "0.25", "0.5", "0.75", "0.95")))


def _len_line(name: str, d: dict[str, Any]) -> str:
    return f"{name} {d['mean']:.1f} words (min {d['min']}, median {d['median']}, max {d['max']})"


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as text: sizes, the SFT model's gold rewards, samples, every data shape."""
    lines = []
    lm = summary.get("lm", {})
    lines.append(f"sandbox {summary['key']} (seed {summary['config']['seed']}, version {summary.get('version')})")
    lines.append(f"  folder: {summary.get('root', '?')}")
    lines.append(
        f"  model: tiny Llama, {summary['parameters']:,} parameters, vocabulary {summary['vocab_size']} words; "
        f"pretrained on {lm.get('corpus_documents', '?')} documents ({lm.get('corpus_tokens', '?'):,} tokens, "
        f"{lm.get('noisy_documents', 0)} made disfluent), loss {summary['pretrain_loss']:.3f}; "
        f"fine-tuned on {lm.get('demonstrations', '?')} demonstrations, loss {summary['sft_loss']:.3f}"
    )
    scores = summary.get("start_scores") or {}
    if scores:
        lines.append("  starting points on the capability categories (lm-eval; value [95% CI] (chance)):")
        for start, by in scores.items():
            lines.append(f"    {start:<17} " + "; ".join(
                f"{c} {s['value']:.3f} [{s['ci_low']:.3f}, {s['ci_high']:.3f}]"
                + ("" if s.get("chance") is None else f" ({s['chance']:.2f})") for c, s in by.items()))
    sft = summary["sft_samples"]
    lines.append(f"  SFT samples' gold reward ({sft['reward']['n']} samples): {_dist_line(sft['reward'])}")
    lines.append(f"    disfluent (any ungrammatical word pair): {sft['disfluent_fraction']:.1%}, "
                 f"mean disfluency {sft['disfluency_mean']:.3f}; {_len_line('length', sft['lengths'])}")
    lines.append("  samples (prompt => completion  [gold reward]):")
    for s in summary.get("samples", []):
        lines.append(f"    {s['prompt']} => {s['completion']}  [{s['reward']:+.3f}]")
    lines.append("  data:")
    for name, d in summary["data"].items():
        lines.append(f"    {name}.jsonl: {d['rows']} rows")
        if "gold_agreement" in d:
            extra = f", {d['flipped']:.1%} flipped on purpose" if "flipped" in d else ""
            lines.append(f"      gold agreement {d['gold_agreement']:.1%}, label noise {d['label_noise']:.1%}"
                         f"{extra} ({d['gold_ties']} gold ties left out)")
        if "stages" in d and d["stages"]:
            by = d.get("sft_margin_by_stage", {})
            lines.append("      stages (easy to hard by the SFT margin): "
                         + ", ".join(f"{s}: {n} rows" + (f" (margin {by[s]:+.2f})" if s in by else "")
                                     for s, n in d["stages"].items()))
        if d.get("session_turns"):
            lines.append(f"      {d['session_turns']} of them are agent turns of dialogues")
        if "desirable" in d:
            lines.append(f"      desirable {d['desirable']}, undesirable {d['undesirable']} "
                         f"(threshold {d['threshold']:+.3f}, from {d['pool']} samples)")
        if "segment_length" in d:
            over = next((f", {v} sequences over {k.split('_')[1]} tokens" for k, v in d.items()
                         if k.startswith("over_")), "")
            lines.append(f"      segment lengths {d['segment_length']}, first bad turn {d['first_bad_turn']}, "
                         f"longest {d['tokens_max']} tokens{over}")
        for part, ld in d.get("lengths", {}).items():
            lines.append(f"      {_len_line(part, ld)}")
    seconds = summary.get("seconds", {})
    if seconds:
        lines.append("  built in " + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items()))
    return "\n".join(lines)
