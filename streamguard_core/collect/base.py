"""The collector contract: a source yields fix references and rejects, resumably."""

from __future__ import annotations

import os
from abc import ABC, abstractmethod
from collections.abc import Iterator
from typing import Any, ClassVar

from streamguard_core.collect.records import FixRef, SourceReject


def resolve_secret(secret_value: str | None, env_name: str) -> str | None:
    """A token or key: ``secret_value`` (a Prefect Secret block's, read by the task layer)
    wins over the environment variable ``env_name``; blank values count as none."""
    for value in (secret_value, os.environ.get(env_name)):
        if value and value.strip():
            return value.strip()
    return None


def fixes_or_reject(result: list[FixRef] | SourceReject) -> Iterator[FixRef | SourceReject]:
    """The items of one advisory's parse: its fixes, or the one reject."""
    if isinstance(result, SourceReject):
        yield result
    else:
        yield from result


class Collector(ABC):
    """A source of fix references.

    :meth:`iter_fixes` reads ``cursor`` (a JSON-able dict, empty on a first run) to know where
    to continue, and updates it in place only after every item of a page was yielded, so a
    driver that saves the cursor after each item never skips anything; items re-yielded after
    a resume are deduplicated by the driver. It sets ``cursor["done"] = True`` at the end.
    A failure that ends the source (a rate limit that does not recover, a page that stays
    malformed) is yielded as a :class:`SourceReject` and ends the iteration with the cursor
    where it was, so the next run resumes there.
    """

    name: ClassVar[str]

    @abstractmethod
    def iter_fixes(self, cursor: dict[str, Any]) -> Iterator[FixRef | SourceReject]:
        """Fix references of this source from ``cursor`` on (see the class docstring)."""
