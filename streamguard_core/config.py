"""Typed configuration (pydantic) for each concern; YAML load/save.

These models are the single description of a run: the CLI flags mirror their fields, the
Prefect flows take them as parameters, and the processed data set stores them in its metadata.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SplitStrategy = Literal["auto", "codexglue", "explicit", "random", "project", "group", "time"]
DedupMode = Literal["none", "exact", "normalized"]


class FieldMap(BaseModel):
    """Names of the fields in a generic JSONL/CSV file."""

    model_config = ConfigDict(extra="forbid")

    func: str = Field("func", description="Field holding the function source code.")
    label: str = Field("target", description="Field holding the 0/1 label (1 = vulnerable).")
    id: str | None = Field(None, description="Field holding a record id (default: file:line).")
    project: str | None = Field("project", description="Field holding the project name.")
    commit_id: str | None = Field("commit_id", description="Field holding the commit hash.")
    cwe: str | None = Field("cwe", description="Field holding the CWE id.")
    idx: str | None = Field("idx", description="Field holding an integer index (CodeXGLUE idx).")
    group: str | None = Field("group", description="Field holding a group key for group splits.")
    weight: str | None = Field(None, description="Field holding a per-sample weight.")
    date: str | None = Field("commit_date", description="Field holding a date for time splits.")


class DataConfig(BaseModel):
    """Where the data comes from and how it is split and deduplicated."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[str] = Field(
        default_factory=list,
        description="Input files, each optionally prefixed 'SPLIT=' (train/valid/test). "
        "Empty means the embedded synthetic data set.",
    )
    format: Literal["auto", "devign", "codexglue", "juliet", "jsonl", "csv", "hf"] = Field(
        "auto", description="Input format; 'auto' decides from the file name and first record."
    )
    fields: FieldMap = Field(default_factory=FieldMap, description="Generic JSONL/CSV fields.")
    juliet_text_field: Literal["func_anon", "func"] = Field(
        "func_anon",
        description="Juliet text field; 'func' leaks labels through names and comments.",
    )
    codexglue_splits: str | None = Field(
        None, description="Directory with CodeXGLUE train.txt/valid.txt/test.txt index files."
    )
    split_strategy: SplitStrategy = Field(
        "auto",
        description="auto: codexglue when index files are given, explicit when inputs carry "
        "SPLIT= prefixes, else random (stratified).",
    )
    split_ratios: tuple[float, float, float] = Field(
        (0.8, 0.1, 0.1), description="Train/valid/test fractions for computed splits."
    )
    seed: int = Field(42, description="Seed for splits and the synthetic generator.")
    dedup: DedupMode = Field(
        "normalized",
        description="none, exact text, or normalized (comments/whitespace stripped, "
        "identifiers and literals abstracted).",
    )
    synthetic_pairs_per_cwe: int = Field(
        40, ge=1, description="Synthetic data: vulnerable/fixed pairs per CWE family."
    )
    max_records: int | None = Field(
        None, ge=1, description="Read at most this many records per input (quick runs)."
    )

    @field_validator("split_ratios")
    @classmethod
    def _ratios_sum_to_one(cls, v: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(r < 0 for r in v) or abs(sum(v) - 1.0) > 1e-6 or v[0] <= 0:
            raise ValueError(f"split_ratios must be >= 0, sum to 1 and train > 0, got {v}")
        return v


class PreprocessConfig(BaseModel):
    """How functions become tokens and graphs."""

    model_config = ConfigDict(extra="forbid")

    tokenizer: str | None = Field(
        None,
        description="Hugging Face tokenizer name or local dir (e.g. microsoft/codebert-base); "
        "None trains a byte-level BPE on the train split.",
    )
    vocab_size: int = Field(8000, ge=300, description="Vocabulary size of a trained BPE.")
    tokenizer_train_max_functions: int = Field(
        3000, ge=1, description="Train the BPE on at most this many train functions (seeded)."
    )
    max_seq_len: int = Field(512, ge=16, description="Token budget incl. <s> and </s>.")
    trimming: Literal["vulnerability_aware", "head"] = Field(
        "vulnerability_aware",
        description="How over-long functions are cut: keep windows around risky constructs, "
        "or keep the head.",
    )
    max_func_chars: int = Field(
        1_000_000, ge=1, description="Functions longer than this are rejected (too_large)."
    )
    max_nodes: int = Field(
        20_000, ge=16, description="AST graphs above this many nodes are cut (recorded)."
    )
    language: Literal["auto", "c", "cpp"] = Field(
        "auto", description="Grammar: auto tries C, then C++ when C fails badly."
    )
    workers: int = Field(0, ge=0, description="Worker processes; 0 = all cores.")
    chunk_size: int = Field(256, ge=1, description="Functions per worker task.")
    gnn_memory_budget_mb: float = Field(
        2048.0, gt=0, description="Memory budget used to recommend a GNN batch size."
    )
    gnn_hidden_dim: int = Field(256, ge=1, description="GNN hidden size assumed for sizing.")
    quick_test: bool = Field(False, description="Process at most 200 records per split.")

    @model_validator(mode="after")
    def _check(self) -> PreprocessConfig:
        if self.max_seq_len < 16:
            raise ValueError("max_seq_len must be >= 16")
        return self


def load_yaml(path: str | Path, model: type[BaseModel]) -> BaseModel:
    """Load a YAML file into a pydantic model (clear error on unknown keys)."""
    with open(path, encoding="utf-8") as fh:
        return model.model_validate(yaml.safe_load(fh) or {})


def save_yaml(obj: BaseModel, path: str | Path) -> Path:
    """Save a pydantic model as YAML."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(obj.model_dump(mode="json"), sort_keys=False))
    return path
