"""Checks that lm-eval loads for the sandbox's local tasks (`!function sandbox_checks.NAME`):
thin names for the harness's own functions, so the check lives in one place."""

from harness.evaluate.sandbox_tasks import process_fluency, process_instruction

__all__ = ["process_fluency", "process_instruction"]
