"""Names that become paths: a suite's name, run ids, task and plugin-provided names.

Each becomes one path component under `results/` or `reports/` (`results/<suite>/<run_id>.parquet`,
`reports/<suite>.html`), so a name is checked before it is joined to a folder: letters, digits,
`.`, `_` and `-`, starting with a letter or digit. That excludes `..`, `/`, an absolute path, a
drive letter and hidden files, so nothing a suite file says can write outside those folders.
"""

from __future__ import annotations

import re

from harness.errors import HarnessError

NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")


def is_name(value: object) -> bool:
    """Whether `value` is a string usable as one path component (see the module docstring)."""
    return isinstance(value, str) and NAME_PATTERN.fullmatch(value) is not None and ".." not in value


def check_name(value: object, where: str) -> str:
    """`value` if it is a name, else a HarnessError naming `where` (e.g. "suite.yaml: name")."""
    if not is_name(value):
        raise HarnessError(
            f"{where} = {value!r} is not a plain name; use letters, digits, '.', '_' and '-' "
            "(no '/', no '..', at most 128 characters), e.g. my_suite"
        )
    return value  # type: ignore[return-value]
