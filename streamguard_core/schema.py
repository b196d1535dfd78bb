"""The one record type every loader yields, and the reject type for input that is refused."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

RECORD_FIELDS = (
    "id",
    "func",
    "label",
    "source",
    "project",
    "commit_id",
    "cwe",
    "idx",
    "group",
    "weight",
    "meta",
)


@dataclass(slots=True)
class FunctionRecord:
    """One labelled C/C++ function (label 1 = vulnerable, 0 = safe).

    ``weight`` is its loss weight under ``train.use_weights``: the input's weight field (see
    ``FieldMap.weight``; loaders refuse NaN, infinite and negative values), else 1.0.
    """

    id: str
    func: str
    label: int
    source: str
    project: str | None = None
    commit_id: str | None = None
    cwe: str | None = None
    idx: int | None = None
    group: str | None = None
    weight: float = 1.0
    meta: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form (field order as in :data:`RECORD_FIELDS`)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FunctionRecord:
        """Inverse of :meth:`to_dict`; unknown keys go to ``meta``."""
        known = {k: data[k] for k in RECORD_FIELDS if k in data}
        extra = {k: v for k, v in data.items() if k not in RECORD_FIELDS}
        record = cls(**known)
        if extra:
            record.meta = {**record.meta, **extra}
        return record


@dataclass(slots=True)
class Reject:
    """An input record that was refused: where it came from and why.

    ``reason`` is a short stable code (``invalid_json``, ``invalid_label``, ...); ``detail`` is
    the human-readable explanation; ``preview`` holds at most 200 characters of the raw input.
    """

    file: str
    line: int
    reason: str
    detail: str
    record_id: str | None = None
    stage: str = "load"
    preview: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON form for ``rejects.jsonl``."""
        return asdict(self)

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}: {self.detail}"
