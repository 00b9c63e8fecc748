"""Reading published results: a suite's `latest.json` pointer, the snapshot it names, and a Hub
dataset brought to a local folder (harness.report.dataset writes them; its docstring has the layout)."""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

from harness.errors import HarnessError
from harness.names import is_name
from harness.results import ResultStore
from harness.results.store import PUBLISHED_POINTER as LATEST
from harness.suite import run_suggestion

HUB_PREFIX = "hf://datasets/"


def latest_pointers(root: Path) -> dict[str, dict]:
    """Each published suite's `latest.json` under `root`, by suite name."""
    pointers = {}
    for path in sorted(Path(root).glob(f"*/{LATEST}")):
        if is_name(path.parent.name):
            pointers[path.parent.name] = read_pointer(path)
    return pointers


def read_pointer(path: Path) -> dict:
    try:
        pointer = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise HarnessError(f"{path}: not a readable snapshot pointer ({err}); publish the suite again") from err
    if not isinstance(pointer, dict) or not is_name(pointer.get("snapshot")):
        raise HarnessError(f"{path}: 'snapshot' is missing or not a plain name; publish the suite again")
    return pointer


def hub_repo_id(target: str) -> str:
    """OWNER/NAME of hf://datasets/OWNER/NAME (a model or space repo is refused: results are datasets)."""
    parts = target[len(HUB_PREFIX):].split("/") if target.startswith(HUB_PREFIX) else []
    if len(parts) != 2 or not all(is_name(p) for p in parts):
        raise HarnessError(f"{target!r}: a Hub dataset is named hf://datasets/OWNER/NAME, e.g. "
                           "hf://datasets/my-org/harness-results")
    return "/".join(parts)


def local_results(results: str, cache: Path) -> Path:
    """A folder to read results from: `results` itself, or a Hub dataset's files downloaded under
    `cache` (hf://datasets/OWNER/NAME; the Hub is reached only when asked to)."""
    if not results.startswith("hf://"):
        return Path(results)
    from huggingface_hub import snapshot_download

    repo_id = hub_repo_id(results)
    with hub_errors(results, "read"):
        return Path(snapshot_download(repo_id, repo_type="dataset", cache_dir=cache))


@contextmanager
def hub_errors(dataset: str, doing: str):
    """A Hub call's failure (offline, no such repo, no token, no network) as one line naming the
    dataset and what to check, instead of huggingface_hub's traceback."""
    try:
        yield
    except HarnessError:
        raise
    except Exception as err:  # noqa: BLE001 - huggingface_hub, requests and httpx each raise their own
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        raise HarnessError(
            f"{dataset}: could not {doing} the Hub dataset ({type(err).__name__}: {first[:200]}); check the name, "
            "the network (HF_HUB_OFFLINE unset), HF_ENDPOINT and HF_TOKEN, or use a local folder") from err


def suite_results_root(results_root: Path, suite: str) -> Path:
    """The results root holding `suite`'s runs: `results_root` when the suite's runs are there
    (a results folder), else the runs of its latest published snapshot. A tables-only publication
    is a HarnessError saying where its full results are."""
    root = Path(results_root)
    if ResultStore(root, suite).run_ids():
        return root
    pointer_path = root / suite / LATEST
    if not pointer_path.exists():
        return root  # nothing stored: the caller says how to run the suite
    pointer = read_pointer(pointer_path)
    runs = root / suite / pointer["snapshot"] / "runs"
    if ResultStore(runs, suite).run_ids():
        return runs
    raise HarnessError(
        f"{pointer_path}: this copy holds only the published tables of {suite}'s snapshot "
        f"{pointer['snapshot']}; its runs are kept at {pointer.get('full_results', '?')}: fetch them into "
        f"{runs / suite} (README: 'Published results'), or {run_suggestion(suite).removesuffix(' first')}")


def published_suites(results_root: Path) -> list[str]:
    """Suites under `results_root` with a published snapshot (`<suite>/latest.json`)."""
    return sorted(latest_pointers(results_root))
