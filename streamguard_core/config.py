"""The configuration tree (pydantic): the single source of every setting and default.

::

    PipelineConfig                  the flows' parameter; every preset YAML is one
    ├── data: DataConfig            inputs, fields, splits, dedup
    ├── preprocessing: PreprocessConfig
    ├── plan: TrainingPlan
    │   ├── models: [ModelConfig]   GNNConfig | TransformerConfig | BaselineConfig (by ``kind``)
    │   ├── seeds
    │   └── train: TrainConfig      every optimisation setting
    ├── criteria: SuccessCriteria
    └── sagemaker: SageMakerConfig  (backend=sagemaker)

    CollectConfig                   the ``collect`` flow's parameter
    ├── sources: [OSV | GitHub | NVD | ExploitDB | File]SourceConfig (by ``kind``)
    ├── http: HttpConfig            timeouts, retries, the longest wait honoured
    └── fixes: FixExtractConfig     the git fix extractor

    Phase2Config                    the ``phase2`` flow's parameter
    ├── noise: NoiseConfig          confidence tiers and weights, priors
    ├── merge: MergeConfig          project split, distribution-check bounds
    └── retrain: PipelineConfig     the phase-2 training run

    TrainJobSpec(model, train, seed, data_dir, run_dir)   one run; TrainingPlan.jobs() makes them

The CLI builds its flags from these fields, the Prefect UI renders them as forms, a run saves
its spec as ``exp_config.json`` and a SageMaker job receives it as one hyperparameter.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, field_validator, model_validator

from streamguard_core.aws.config import SageMakerConfig
from streamguard_core.preprocess.parse import NODE_TOKEN_BUCKETS

M = TypeVar("M", bound=BaseModel)
SplitStrategy = Literal["auto", "codexglue", "explicit", "random", "project", "group", "time"]
DedupMode = Literal["none", "exact", "normalized"]
ThresholdObjective = Literal["f1", "accuracy", "precision"]
TrivialMetric = Literal["f1", "accuracy", "accuracy_at_half", "roc_auc"]


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
    weight: str | None = Field(
        "weight",
        description="Field holding a per-sample weight (a finite number >= 0; used by "
        "train.use_weights). Records without it weigh 1.0.",
    )
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
    data_flow_edges: bool = Field(
        False,
        description="Also build data-flow edges in the graphs: last write (a variable's latest "
        "assignment -> each later read, in source order) and def-use (its declaration -> each "
        "later occurrence). Edge type ids 3 and 4; the AST edge types keep ids 0-2.",
    )
    workers: int = Field(0, ge=0, description="Worker processes; 0 = all cores.")
    chunk_size: int = Field(256, ge=1, description="Functions per worker task.")
    executor: Literal["local", "dask"] = Field(
        "local",
        description="local: a process pool of `workers` on this machine; dask: the same chunks "
        "as tasks on a Dask cluster (`dask_address`, or a LocalCluster of `workers` processes "
        "when empty). The output is byte-identical either way.",
    )
    dask_address: str | None = Field(
        None,
        description="executor 'dask': the scheduler address (tcp://host:8786); empty: a "
        "LocalCluster on this machine.",
    )
    gnn_memory_budget_mb: float = Field(
        2048.0, gt=0, description="Memory budget used to recommend a GNN batch size."
    )
    gnn_hidden_dim: int | None = Field(
        None,
        ge=1,
        description="GNN hidden size assumed for the recommended batch size (empty: "
        "GNNConfig's default hidden_dim).",
    )
    quick_test: bool = Field(False, description="Process at most 200 records per split.")

    @model_validator(mode="after")
    def _check(self) -> PreprocessConfig:
        if self.max_seq_len < 16:
            raise ValueError("max_seq_len must be >= 16")
        return self


# --------------------------------------------------------------------------- models
# One config per model kind, discriminated by ``kind``. They live here (not beside the torch
# code) so that the flows, the CLI and the SageMaker entrypoint read them without importing
# torch, and every default exists once.


class _ModelBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(
        None,
        description="Run name: the folder under the output root and the report's row "
        "(default: the kind). Two models of one kind in a plan need different names. One "
        "folder name: 1-128 letters, digits, '.', '_', '-', starting with a letter or digit.",
    )

    @field_validator("name")
    @classmethod
    def _safe_name(cls, value: str | None) -> str | None:
        from streamguard_core.training.paths import check_component

        # the name is a folder under the output root: never a way out of it (../, /abs)
        return None if value is None else check_component(value, "model name")

    @property
    def run_name(self) -> str:
        """The folder and report name of this model's runs."""
        return self.name or self.kind  # type: ignore[attr-defined]


class GNNConfig(_ModelBase):
    """Architecture of a graph classifier over the AST graphs."""

    kind: Literal["gnn"] = Field("gnn", description="Model kind discriminator.")
    arch: Literal["gcn", "ggnn", "rgcn"] = Field(
        "gcn",
        description="gcn: stacked GCNConv layers with residuals; ggnn: one Devign-style "
        "GatedGraphConv (GRU-updated message passing) of num_layers steps; rgcn: stacked "
        "relational GCN layers (one weight per edge type and direction) with residuals.",
    )
    hidden_dim: int = Field(256, ge=1, description="Node embedding / hidden state size.")
    num_layers: int = Field(
        4, ge=1, description="GCN / RGCN layers (gcn, rgcn) or message-passing steps (ggnn)."
    )
    dropout: float = Field(
        0.3, ge=0.0, lt=1.0, description="Dropout after each GCN layer and in the MLP head."
    )
    node_token_dim: int = Field(
        64,
        ge=0,
        description="Embedding size of the hashed identifier-name buckets, concatenated to the "
        "node-type embedding and projected to hidden_dim; 0 ignores node_token.",
    )
    node_token_buckets: int = Field(
        NODE_TOKEN_BUCKETS,
        ge=2,
        description="Rows of the identifier-bucket embedding (must cover the data's buckets; "
        "row 0, 'no name', is a fixed zero vector).",
    )
    use_edge_types: bool = Field(
        False,
        description="gcn and ggnn read every edge alike whatever this says (setting it warns); "
        "arch rgcn is the relational model and always reads edge types.",
    )


TINY = "tiny"


def tiny_shape(hidden_size: int) -> dict[str, int]:
    """Heads and feed-forward size of a ``tiny`` transformer of width ``hidden_size``: 2 heads
    when they divide it (else 1), feed-forward 2x wide. :class:`TransformerConfig` applies it
    to every field left unset, so no caller has to remember it."""
    return {"num_heads": 2 if hidden_size % 2 == 0 else 1, "intermediate_size": 2 * hidden_size}


class TransformerConfig(_ModelBase):
    """Transformer classifier settings ('tiny' from scratch, or a pretrained model)."""

    kind: Literal["transformer"] = Field("transformer", description="Model kind discriminator.")
    model_name_or_path: str = Field(
        TINY,
        description="'tiny': a small RoBERTa built from scratch on the data set's tokenizer "
        "(offline). Otherwise a Hugging Face model name (e.g. microsoft/codebert-base) or a "
        "local directory saved with save_pretrained.",
    )
    hidden_size: int = Field(128, ge=8, description="Hidden size ('tiny' only).")
    num_layers: int = Field(2, ge=1, description="Encoder layers ('tiny' only).")
    num_heads: int | None = Field(
        None,
        ge=1,
        description="Attention heads; must divide hidden_size ('tiny' only). Empty: 2 when they "
        "divide hidden_size, else 1.",
    )
    intermediate_size: int | None = Field(
        None, ge=1, description="Feed-forward size ('tiny' only). Empty: 2 x hidden_size."
    )
    dropout: float = Field(
        0.1,
        ge=0.0,
        lt=1.0,
        description="Hidden and attention dropout (also overrides a pretrained model's, when its "
        "config has these settings).",
    )
    max_seq_len: int | None = Field(
        None,
        ge=16,
        description="Longest input incl. <s> and </s> (sizes 'tiny' positions). Empty: the "
        "processed data set's max_seq_len (filled in when a job is built).",
    )

    @property
    def heads(self) -> int:
        """Attention heads of a 'tiny' model: ``num_heads``, or derived from ``hidden_size``."""
        return self.num_heads or tiny_shape(self.hidden_size)["num_heads"]

    @property
    def feed_forward_size(self) -> int:
        """Feed-forward size of a 'tiny' model: ``intermediate_size``, or 2 x ``hidden_size``."""
        return self.intermediate_size or tiny_shape(self.hidden_size)["intermediate_size"]

    @model_validator(mode="after")
    def _check_shape(self) -> TransformerConfig:
        # the derived sizes stay empty in the config (a form that changes hidden_size must not
        # keep stale ones); ``heads`` and ``feed_forward_size`` resolve them
        if self.model_name_or_path == TINY and self.hidden_size % self.heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.heads}"
            )
        return self


class BaselineConfig(_ModelBase):
    """TF-IDF (code token n-grams) + logistic regression settings."""

    kind: Literal["baseline"] = Field("baseline", description="Model kind discriminator.")
    features: Literal["tokens", "chars", "metrics"] = Field(
        "tokens",
        description="tokens: n-grams of code tokens (the TF-IDF reference); chars: character "
        "n-grams within token boundaries (char_wb), robust to identifier spelling (both with "
        "logistic regression); metrics: code metrics (length, nesting, branches, memory and "
        "error-handling counts) with gradient-boosted trees.",
    )
    ngram_min: int = Field(1, ge=1, le=8, description="Shortest n-gram (tokens or chars).")
    ngram_max: int = Field(
        2, ge=1, le=8, description="Longest n-gram (tokens: up to 4 is sensible; chars: ~5)."
    )
    min_df: int = Field(2, ge=1, description="Ignore n-grams in fewer functions than this.")
    max_features: int = Field(200_000, ge=100, description="Vocabulary cap (most frequent).")
    C: float = Field(1.0, gt=0, description="Inverse L2 regularisation strength.")
    class_weight: Literal["balanced", "none"] = Field(
        "balanced", description="Weight classes by inverse frequency, or not."
    )
    max_iter: int = Field(2000, ge=10, description="Solver iterations.")
    trees: int = Field(300, ge=1, description="features 'metrics': boosting iterations.")
    tree_learning_rate: float = Field(
        0.05, gt=0, le=1, description="features 'metrics': boosting learning rate."
    )
    tree_min_samples_leaf: int = Field(
        20, ge=1, description="features 'metrics': fewest functions in a leaf."
    )

    @model_validator(mode="after")
    def _ngram_range(self) -> BaselineConfig:
        if self.ngram_min > self.ngram_max:
            raise ValueError(f"ngram_min {self.ngram_min} > ngram_max {self.ngram_max}")
        return self


class FusionConfig(_ModelBase):
    """The fusion detector: a learned weighted average of the base models' probabilities plus a
    small MLP, trained on their out-of-fold predictions (``TrainingPlan.fusion``)."""

    kind: Literal["fusion"] = Field("fusion", description="Model kind discriminator.")
    base_models: list[str] = Field(
        default_factory=list,
        description="Run names of the plan's models to fuse (empty: every model of the plan).",
    )
    hidden_dim: int = Field(16, ge=0, description="Hidden units of the MLP (0: weights only).")
    epochs: int = Field(500, ge=1, description="Full-batch epochs at most (early stopping on).")
    lr: float = Field(0.01, gt=0, description="Adam learning rate.")
    weight_decay: float = Field(1e-4, ge=0, description="Adam weight decay.")
    patience: int = Field(
        50, ge=1, description="Epochs without a better validation loss before stopping."
    )
    runs_root: str | None = Field(
        None,
        description="The pipeline output root holding the base models' runs and their OOF "
        "runs (filled in by TrainingPlan.fusion_jobs).",
    )

    @field_validator("base_models")
    @classmethod
    def _safe_base_names(cls, value: list[str]) -> list[str]:
        from streamguard_core.training.paths import check_component

        # each names a folder under runs_root (like a model's run name)
        return [check_component(name, "fusion base model") for name in value]


ModelConfig = Annotated[
    GNNConfig | TransformerConfig | BaselineConfig | FusionConfig, Field(discriminator="kind")
]
BaseModelConfig = GNNConfig | TransformerConfig | BaselineConfig
ModelKind = Literal["transformer", "gnn", "baseline"]
MODEL_KINDS: tuple[ModelKind, ...] = ("transformer", "gnn", "baseline")
NEURAL_KINDS: tuple[ModelKind, ...] = ("transformer", "gnn")
_MODEL_ADAPTER: TypeAdapter[Any] = TypeAdapter(ModelConfig)


def model_config_for(value: Any) -> GNNConfig | TransformerConfig | BaselineConfig | FusionConfig:
    """A model config from a kind name (``"gnn"``: its defaults), a mapping or a config."""
    if isinstance(value, str):
        value = {"kind": value}
    return _MODEL_ADAPTER.validate_python(value)


# --------------------------------------------------------------------------- training


class TrainConfig(BaseModel):
    """Optimisation settings of one run (every model kind; the baseline uses ``seed``)."""

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(10, ge=1, description="Maximum epochs (early stopping on).")
    batch_size: int = Field(32, ge=1, description="Examples per forward pass.")
    lr: float | None = Field(
        None,
        gt=0,
        description="Learning rate. Empty: the LR finder when lr_finder is on, else the kind's "
        "default (GNN 5e-4, tiny transformer 5e-4, pretrained transformer 2.5e-5).",
    )
    weight_decay: float = Field(0.01, ge=0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="Share of steps warming up.")
    accumulation_steps: int = Field(1, ge=1, description="Batches per optimizer step.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    mixed_precision: Literal["auto", "off", "fp16", "bf16"] = Field(
        "auto", description="AMP on CUDA (auto: bf16 if supported, else fp16); off on CPU."
    )
    early_stopping_patience: int = Field(
        3, ge=1, description="Epochs without validation-F1 gain before stopping."
    )
    class_weight_multiplier: float = Field(
        1.2, gt=0, description="Vulnerable-class weight = multiplier * (safe / vulnerable)."
    )
    use_weights: bool = Field(
        False,
        description="Multiply each example's loss by its record weight (the 'weight' field of "
        "the input, kept by preprocessing; 1.0 where absent).",
    )
    threshold_objective: ThresholdObjective = Field(
        "f1",
        description="What the decision threshold is tuned for on valid: vulnerable-class F1, "
        "accuracy, or the lowest threshold reaching target_precision (metrics also report "
        "accuracy at 0.5, the CodeXGLUE convention).",
    )
    target_precision: float = Field(
        0.9, gt=0, le=1, description="Precision the 'precision' objective must reach."
    )
    seed: int = Field(42, description="Seed for initialisation, data order and dropout.")
    checkpoint_every_steps: int = Field(
        50, ge=1, description="Optimizer steps between 'latest' checkpoints (resume points)."
    )
    max_steps_per_epoch: int | None = Field(
        None, ge=1, description="Cut every epoch to N optimizer steps (quick runs)."
    )
    num_threads: int | None = Field(
        None, ge=1, description="torch CPU threads per run (empty: torch's default)."
    )
    lr_finder: bool = Field(
        False, description="With lr empty: run an LR range test (cached) instead of the default."
    )
    lr_finder_steps: int = Field(100, ge=10, description="Steps of the LR range test.")
    lr_cache_dir: str = Field(
        "~/.cache/streamguard/lr", description="Where LR finder results are cached."
    )
    auto_batch_size: bool = Field(
        False,
        description="GNN: batch size from the data set's graph statistics and the memory "
        "budget; transformer on CUDA: halve until one step fits.",
    )
    memory_budget_mb: float | None = Field(
        None,
        gt=0,
        description="Budget for auto_batch_size (default: 80% of GPU memory, else 2048 MB).",
    )
    nproc_per_node: int = Field(
        1,
        ge=1,
        description="Data-parallel processes of one run (torch DDP via torchrun; gloo on CPU, "
        "nccl on CUDA). batch_size stays the global batch, split across the processes.",
    )


class TrainingPlan(BaseModel):
    """Which models, which seeds, and the training settings every run of the plan shares."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelConfig] = Field(
        default_factory=lambda: [model_config_for(k) for k in MODEL_KINDS],
        description="Models to train, each a full model config (a bare kind name such as 'gnn' "
        "means that kind's defaults).",
    )
    seeds: list[int] = Field(
        default_factory=lambda: [42, 43, 44], min_length=1, description="One run per model and seed"
    )
    train: TrainConfig = Field(
        default_factory=TrainConfig,
        description="Training settings of every run (train.seed is replaced by each seed).",
    )
    fusion: bool = Field(
        False,
        description="Add the fusion stage: every fused model is also trained K times on K-1 "
        "folds of train (out-of-fold predictions), then a fusion detector per seed.",
    )
    fusion_model: FusionConfig = Field(
        default_factory=FusionConfig, description="The fusion detector (with fusion on)."
    )
    n_folds: int = Field(
        5,
        ge=2,
        description="Folds of the out-of-fold predictions (near-duplicate groups kept "
        "together, stratified by label).",
    )
    fold_seed: int = Field(0, description="Seed of the fold assignment (the same for all models).")

    @field_validator("models", mode="before")
    @classmethod
    def _kind_names(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if isinstance(value, list):
            return [{"kind": v} if isinstance(v, str) else v for v in value]
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> TrainingPlan:
        names = [m.run_name for m in self.models]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"two models share the run name {dupes}: give each a 'name'")
        if not self.models:
            raise ValueError("a plan needs at least one model")
        if len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct, got {self.seeds}")
        if any(m.kind == "fusion" for m in self.models):
            raise ValueError(
                "a fusion model is not a base model: set plan.fusion: true (and "
                "plan.fusion_model) instead of listing it in plan.models"
            )
        if self.fusion:
            unknown = sorted(set(self.fusion_model.base_models) - set(names))
            if unknown:
                raise ValueError(
                    f"fusion_model.base_models {unknown} are not models of the plan ({names})"
                )
            if self.fusion_model.run_name in names:
                raise ValueError(
                    f"the fusion model's run name {self.fusion_model.run_name!r} is taken by a "
                    "base model: give fusion_model a 'name'"
                )
        return self

    def model(self, name: str) -> GNNConfig | TransformerConfig | BaselineConfig | FusionConfig:
        """The model config whose run name is ``name``."""
        for m in self.models:
            if m.run_name == name:
                return m
        raise KeyError(f"no model {name!r} in the plan ({[m.run_name for m in self.models]})")

    @property
    def names(self) -> list[str]:
        """Run names of the plan's models, in order."""
        return [m.run_name for m in self.models]

    def jobs(self, data_dir: str | Path, output_root: str | Path) -> list[TrainJobSpec]:
        """One job spec per model x seed, run dirs ``<output_root>/<name>/seed_<n>``."""
        return [
            TrainJobSpec(
                model=m,
                train=self.train,
                seed=s,
                data_dir=str(data_dir),
                run_dir=str(seed_dir(output_root, m.run_name, s)),
            )
            for m in self.models
            for s in self.seeds
        ]

    @property
    def fused_names(self) -> list[str]:
        """Run names of the models the fusion stage combines (empty with fusion off)."""
        if not self.fusion:
            return []
        return list(self.fusion_model.base_models) or self.names

    @property
    def all_names(self) -> list[str]:
        """Run names of every model the plan produces: the base models, then fusion's."""
        return self.names + ([self.fusion_model.run_name] if self.fusion else [])

    def all_models(self) -> list[ModelConfig]:
        """Every model the plan produces: the base models, then the fusion model (if on)."""
        return [*self.models, *([self.fusion_model] if self.fusion else [])]

    def oof_jobs(self, data_dir: str | Path, output_root: str | Path) -> list[TrainJobSpec]:
        """One job per fused model x seed x fold: trains on the other folds of train and
        predicts its own fold. Run dirs ``<output_root>/oof/<name>/seed_<n>/fold_<k>``."""
        return [
            TrainJobSpec(
                model=self.model(name),
                train=self.train,
                seed=s,
                data_dir=str(data_dir),
                run_dir=str(oof_dir(output_root, name, s, k)),
                fold=FoldSpec(index=k, count=self.n_folds, seed=self.fold_seed),
            )
            for name in self.fused_names
            for s in self.seeds
            for k in range(self.n_folds)
        ]

    def fusion_jobs(self, data_dir: str | Path, output_root: str | Path) -> list[TrainJobSpec]:
        """One fusion job per seed (empty with fusion off); it reads the seed's base runs and
        OOF runs under ``output_root``."""
        if not self.fusion:
            return []
        model = self.fusion_model.model_copy(
            update={"base_models": self.fused_names, "runs_root": str(output_root)}
        )
        return [
            TrainJobSpec(
                model=model,
                train=self.train,
                seed=s,
                data_dir=str(data_dir),
                run_dir=str(seed_dir(output_root, model.run_name, s)),
            )
            for s in self.seeds
        ]


def oof_dir(output_root: str | Path, model: str, seed: int, fold: int) -> Path:
    """``<output_root>/oof/<model>/seed_<seed>/fold_<fold>``: one out-of-fold run."""
    from streamguard_core.training.paths import confined

    return confined(output_root, "oof", model, f"seed_{seed}", f"fold_{fold}")


class FoldSpec(BaseModel):
    """Which fold of the train split a job holds out (out-of-fold predictions)."""

    model_config = ConfigDict(extra="forbid")

    index: int = Field(ge=0, description="The held-out fold.")
    count: int = Field(ge=2, description="Number of folds.")
    seed: int = Field(0, description="Seed of the fold assignment.")

    @model_validator(mode="after")
    def _index_in_range(self) -> FoldSpec:
        if self.index >= self.count:
            raise ValueError(f"fold index {self.index} out of range for {self.count} folds")
        return self


def seed_dir(output_root: str | Path, model: str, seed: int) -> Path:
    """``<output_root>/<model>/seed_<seed>``: where one run's files go."""
    from streamguard_core.training.paths import confined

    return confined(output_root, model, f"seed_{seed}")


class TrainJobSpec(BaseModel):
    """One training run, complete: what every launcher (CLI, local process, SageMaker) runs.

    ``train.seed`` always equals ``seed``. ``run_dir`` receives the files named by ``RunPaths``.
    """

    model_config = ConfigDict(extra="forbid")

    model: ModelConfig = Field(description="The model to train.")
    train: TrainConfig = Field(default_factory=TrainConfig, description="Training settings.")
    seed: int = Field(42, description="Seed of this run (copied into train.seed).")
    data_dir: str = Field(description="A processed data set (`streamguard data preprocess`).")
    run_dir: str = Field(description="Where the run's files go (resumed when it holds one).")
    fold: FoldSpec | None = Field(
        None,
        description="Hold out this fold of train: train on the others and write the fold's "
        "out-of-fold predictions (oof_predictions.jsonl).",
    )

    @model_validator(mode="after")
    def _seed_into_train(self) -> TrainJobSpec:
        if self.train.seed != self.seed:
            self.train = self.train.model_copy(update={"seed": self.seed})
        return self

    @property
    def name(self) -> str:
        """The model's run name."""
        return self.model.run_name

    @property
    def job_key(self) -> str:
        """The run name, with ``-fold<k>`` for a fold job: unique per model x fold (with the
        seed, names one job: SageMaker job names and checkpoint prefixes use it)."""
        return self.name + (f"-fold{self.fold.index}" if self.fold else "")

    def with_paths(self, data_dir: str | Path, run_dir: str | Path) -> TrainJobSpec:
        """The same job reading ``data_dir`` and writing ``run_dir`` (a launcher's own layout)."""
        return self.model_copy(update={"data_dir": str(data_dir), "run_dir": str(run_dir)})


# --------------------------------------------------------------------------- pipeline


class SuccessCriteria(BaseModel):
    """When a production run counts as a success. Checked per model: every neural model of the
    plan must meet its own F1 and spread bounds (the baseline is the reference, not judged)."""

    model_config = ConfigDict(extra="forbid")

    min_mean_f1: float = Field(
        0.7,
        ge=0,
        le=1,
        description="Each neural model's mean vulnerable-class F1 over seeds must reach this. "
        "(Predicting 'vulnerable' for everything scores ~0.61 on Devign valid, 0.67 on balanced "
        "data: see beat_trivial.)",
    )
    max_f1_std: float | None = Field(
        0.05,
        ge=0,
        description="Each neural model's F1 std across seeds must stay below this. With one "
        "seed the std is n/a and this check fails; empty switches the check off.",
    )
    beat_trivial: bool = Field(
        True,
        description="Each neural model's mean F1 must beat predicting 'vulnerable' for every "
        "function, and its mean accuracy the majority class, on the same split.",
    )
    trivial_metrics: list[TrivialMetric] = Field(
        default_factory=lambda: list[TrivialMetric](["f1", "accuracy"]),
        description="With beat_trivial: the metrics whose mean must beat their trivial "
        "reference (F1: all-vulnerable; accuracy and accuracy at 0.5: the majority class; "
        "ROC-AUC: 0.5). A plan tuning thresholds for accuracy judges accuracy, not F1.",
    )
    require_all_seeds: bool = Field(True, description="Every model x seed run completed")
    require_no_collapse: bool = Field(True, description="No run collapsed")


Backend = Literal["local", "sagemaker"]


class PipelineConfig(BaseModel):
    """Everything one pipeline run needs: the parameter of ``streamguard-pipeline`` and
    ``monthly-retrain``, and the content of every preset YAML in ``deployments/params``."""

    model_config = ConfigDict(extra="forbid")

    data: DataConfig = Field(default_factory=DataConfig, description="Inputs and splits.")
    preprocessing: PreprocessConfig = Field(
        default_factory=PreprocessConfig, description="Tokens, graphs and trimming."
    )
    plan: TrainingPlan = Field(default_factory=TrainingPlan, description="Models x seeds.")
    criteria: SuccessCriteria = Field(
        default_factory=SuccessCriteria, description="When the run counts as a success."
    )
    output_root: str = Field("runs/pipeline", description="Where the run's files go.")
    run_id: str | None = Field(
        None,
        description="Empty: the run owns output_root (a second run on it at once is refused). "
        "Set: the run's files go to output_root/runs/<run_id>/, so runs share one output root "
        "(and its data cache) side by side; 'auto' takes the Prefect flow run's name.",
    )
    backend: Backend = Field(
        "local",
        description="local: one process per run on this worker (one GPU each when several); "
        "sagemaker: one managed (spot) training job per run.",
    )
    run_preflight: bool = Field(
        True, description="Go/no-go checks of exactly the planned models before training."
    )
    local_parallel_jobs: int = Field(
        1,
        ge=1,
        description="backend=local without CUDA: jobs trained at once, each in its own process "
        "with cores/N torch threads (small models train faster side by side than on more "
        "threads). With GPUs: one job per GPU.",
    )
    sagemaker: SageMakerConfig | None = Field(
        None, description="SageMaker settings (needed with backend=sagemaker)."
    )
    aws_credentials_block: str | None = Field(
        None, description="prefect-aws AwsCredentials block name (empty: boto3's default chain)."
    )
    s3_bucket_block: str | None = Field(
        None,
        description="prefect-aws S3Bucket block name: the bucket SageMaker jobs use (overrides "
        "sagemaker.bucket; `python -m deployments.install_aws` saves one).",
    )

    @field_validator("run_id")
    @classmethod
    def _safe_run_id(cls, value: str | None) -> str | None:
        # run_id names one folder under output_root/runs: one safe path component, never a
        # way out of the output root; an empty form field means "not set"
        from streamguard_core.training.paths import SAFE_COMPONENT

        if not value:
            return None
        if value != "auto" and (not SAFE_COMPONENT.fullmatch(value) or ".." in value):
            raise ValueError(
                f"run_id {value!r}: use 1-128 letters, digits, '-', '_' or '.', starting with a "
                "letter or digit (one folder name: no '/', no '..'), or 'auto'"
            )
        return value

    @model_validator(mode="after")
    def _backend_settings(self) -> PipelineConfig:
        if self.backend == "sagemaker" and self.sagemaker is None:
            raise ValueError(
                "backend 'sagemaker' needs the 'sagemaker' settings (image_uri, role_arn, "
                "bucket, ...): see the README's SageMaker section"
            )
        return self


def load_yaml(path: str | Path, model: type[M]) -> M:
    """Load a YAML (or JSON) file into a pydantic model (clear error on unknown keys)."""
    with open(path, encoding="utf-8") as fh:
        return model.model_validate(yaml.safe_load(fh) or {})


def save_yaml(obj: BaseModel, path: str | Path) -> Path:
    """Save a pydantic model as YAML."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(obj.model_dump(mode="json"), sort_keys=False))
    return path


# --------------------------------------------------------------------------- phase 2: collection


class HttpConfig(BaseModel):
    """How a collector talks to a service: timeouts, retries and the longest wait it accepts."""

    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(30.0, gt=0, description="Connect/read timeout of one request.")
    max_retries: int = Field(
        5, ge=0, description="Retries of one request on 429, 5xx, timeouts and truncated bodies."
    )
    backoff_s: float = Field(1.0, ge=0, description="First backoff (doubles per retry, jittered).")
    max_wait_s: float = Field(
        120.0,
        ge=0,
        description="Longest single wait honoured (Retry-After, rate-limit reset); a longer one "
        "counts as a rate limit that does not recover.",
    )
    user_agent: str = Field("streamguard-collector", description="User-Agent header.")


class OSVSourceConfig(BaseModel):
    """OSV (osv.dev): the bulk export zip of an ecosystem, or the query API per package."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["osv"] = Field("osv", description="Source discriminator.")
    api_url: str = Field("https://api.osv.dev", description="OSV API base URL.")
    export_url: str = Field(
        "https://osv-vulnerabilities.storage.googleapis.com",
        description="Bulk export base URL (<export_url>/<ecosystem>/all.zip).",
    )
    ecosystem: str = Field("OSS-Fuzz", description="OSV ecosystem.")
    mode: Literal["export", "query"] = Field(
        "export",
        description="export: the ecosystem's all.zip; query: /v1/querybatch over `packages`, "
        "then /v1/vulns/{id} per hit.",
    )
    packages: list[str] = Field(
        default_factory=list,
        description="Package (project) names; empty in export mode = every record.",
    )
    batch_size: int = Field(100, ge=1, le=1000, description="Queries per /v1/querybatch call.")


class GitHubSourceConfig(BaseModel):
    """GitHub security advisories (REST ``/advisories``): fix commits from their references."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["github"] = Field("github", description="Source discriminator.")
    api_url: str = Field("https://api.github.com", description="GitHub REST API base URL.")
    token_env: str = Field("GITHUB_TOKEN", description="Environment variable holding a token.")
    token_secret_block: str | None = Field(
        None, description="Prefect Secret block holding a token (preferred over token_env)."
    )
    advisory_type: Literal["reviewed", "unreviewed", "malware"] = Field(
        "reviewed", description="`type` query parameter."
    )
    cwes: list[str] = Field(default_factory=list, description="`cwes` filter, e.g. CWE-787.")
    published_since: str | None = Field(None, description="`published` lower bound (ISO date).")
    per_page: int = Field(100, ge=1, le=100, description="Advisories per page.")


class NVDSourceConfig(BaseModel):
    """NVD CVE API 2.0: CVEs whose references name a fix commit (``Patch`` references)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["nvd"] = Field("nvd", description="Source discriminator.")
    api_url: str = Field(
        "https://services.nvd.nist.gov/rest/json/cves/2.0", description="CVE API 2.0 URL."
    )
    api_key_env: str = Field("NVD_API_KEY", description="Environment variable with an API key.")
    api_key_secret_block: str | None = Field(
        None, description="Prefect Secret block with an API key (preferred over api_key_env)."
    )
    keyword: str | None = Field(None, description="`keywordSearch` (e.g. a project name).")
    cwe: str | None = Field(None, description="`cweId` filter, e.g. CWE-787.")
    pub_start: str | None = Field(None, description="`pubStartDate` (ISO 8601, with pub_end).")
    pub_end: str | None = Field(None, description="`pubEndDate` (at most 120 days after start).")
    results_per_page: int = Field(2000, ge=1, le=2000, description="`resultsPerPage`.")
    request_interval_s: float | None = Field(
        None,
        ge=0,
        description="Seconds between requests (default: NVD's limits, 6 s without a key and "
        "0.6 s with one: 5 or 50 requests per rolling 30 s).",
    )


class ExploitDBSourceConfig(BaseModel):
    """The ExploitDB index CSV: which CVEs have a public exploit (metadata for other sources)."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["exploitdb"] = Field("exploitdb", description="Source discriminator.")
    index_url: str = Field(
        "https://gitlab.com/exploit-database/exploitdb/-/raw/main/files_exploits.csv",
        description="URL (or local path) of files_exploits.csv.",
    )


class FileSourceConfig(BaseModel):
    """The offline source: OSV records + functions already extracted from their fix commits."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["file"] = Field("file", description="Source discriminator.")
    records: str = Field(
        "../shared/data/osv_ossfuzz_records.jsonl.gz",
        description="OSV records in the OSV API's JSON shape (JSONL, gzip ok).",
    )
    functions: str = Field(
        "../shared/data/ossfuzz_fixes.jsonl.gz",
        description="Function versions before/after fix commits (the ossfuzz_fixes shape).",
    )


SourceSettings = (
    OSVSourceConfig
    | GitHubSourceConfig
    | NVDSourceConfig
    | ExploitDBSourceConfig
    | FileSourceConfig
)
"""One source's settings (the members of :data:`SourceConfig`)."""
SourceConfig = Annotated[SourceSettings, Field(discriminator="kind")]
SOURCE_CLASSES: dict[str, type[BaseModel]] = {
    cls.model_fields["kind"].default: cls
    for cls in (
        OSVSourceConfig, GitHubSourceConfig, NVDSourceConfig, ExploitDBSourceConfig,
        FileSourceConfig,
    )
}  # fmt: skip
"""Source kind -> its settings class (``SOURCE_CLASSES["osv"]()``: that source's defaults)."""
SOURCE_KINDS = tuple(SOURCE_CLASSES)


class FixExtractConfig(BaseModel):
    """Turning (repository, fix commit) into labelled function versions."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="Extract functions from the fix commits found.")
    repos: dict[str, str] = Field(
        default_factory=dict,
        description="Repository overrides: a project name or repository URL -> a URL, local "
        "path or file:// URL (mirrors, local clones).",
    )
    cache_dir: str | None = Field(
        None, description="Where fetched repositories are kept (default <output_dir>/git)."
    )
    max_files_per_commit: int = Field(
        20, ge=1, description="Skip fix commits changing more C/C++ files than this."
    )
    max_func_chars: int = Field(
        20_000, ge=100, description="Skip function pairs with a version longer than this."
    )
    max_commits: int | None = Field(
        None, ge=1, description="Extract at most this many fix commits (quick runs)."
    )
    git_timeout_s: float = Field(
        600.0, gt=0, description="Seconds one git command (a fetch) may run before it is killed."
    )


class CollectConfig(BaseModel):
    """The parameter of the ``collect`` flow: which sources, where the results go."""

    model_config = ConfigDict(extra="forbid")

    sources: list[SourceConfig] = Field(
        default_factory=lambda: list[SourceConfig]([FileSourceConfig()]),
        description="Sources to collect from (run concurrently).",
    )
    output_dir: str = Field("runs/collected", description="Where collected data goes.")
    http: HttpConfig = Field(default_factory=HttpConfig, description="HTTP behaviour.")
    fixes: FixExtractConfig = Field(
        default_factory=FixExtractConfig, description="The git fix extractor."
    )
    dedup_against: list[str] = Field(
        default_factory=list,
        description="Data already held (processed data dirs or input files): collected "
        "functions equal to one of them (normalized) are counted as deduplicated.",
    )
    max_items: int | None = Field(
        None, ge=1, description="Per source: stop after this many advisories (quick runs)."
    )
    offline_fallback: FileSourceConfig | None = Field(
        default_factory=FileSourceConfig,
        description="monthly-retrain: collect from this when every online source fails.",
    )


# --------------------------------------------------------------------------- phase 2


class NoiseConfig(BaseModel):
    """Noise reduction by phase-1 confidence: which collected labels are kept, at what weight."""

    model_config = ConfigDict(extra="forbid")

    high_confidence: float = Field(
        0.8, gt=0, lt=1, description="Ensemble confidence in the label above this: high_weight."
    )
    high_weight: float = Field(1.0, ge=0, description="Weight of confirmed labels.")
    mid_confidence: float = Field(
        0.6, gt=0, lt=1, description="Confidence in [mid, high]: mid_weight."
    )
    mid_weight: float = Field(0.3, ge=0, description="Weight of plausible labels.")
    rest_fraction: float = Field(
        0.1, ge=0, le=1, description="Share of the rest kept (seeded sample) at rest_weight."
    )
    rest_weight: float = Field(0.1, ge=0, description="Weight of the sampled rest.")
    seed: int = Field(0, description="Seed of the rest sample.")
    priors: list[Literal["in_crash_state", "single_change"]] = Field(
        default_factory=list,
        description="Noise signals used as priors on the label being right (odds multiplied "
        "into the ensemble confidence): in_crash_state, single_change (n_changed_functions 1).",
    )
    crash_state_prior: float = Field(
        0.8, gt=0, lt=1, description="P(label right) of an in_crash_state function."
    )
    single_change_prior: float = Field(
        0.7, gt=0, lt=1, description="P(label right) of the only function its fix changed."
    )

    @model_validator(mode="after")
    def _ordered(self) -> NoiseConfig:
        if self.mid_confidence > self.high_confidence:
            raise ValueError(
                f"mid_confidence {self.mid_confidence} > high_confidence {self.high_confidence}"
            )
        return self


class MergeConfig(BaseModel):
    """Merging collected data into phase-1 data: the project split and the distribution check."""

    model_config = ConfigDict(extra="forbid")

    test_projects: list[str] | None = Field(
        None,
        description="Collected projects held out as the phase-2 test split (never weighted or "
        "trained on); default: a seeded share (test_project_fraction) of the projects.",
    )
    test_project_fraction: float = Field(
        0.25, ge=0, lt=1, description="Share of collected projects held out for testing."
    )
    split_seed: int = Field(0, description="Seed of the project split.")
    max_label_shift: float = Field(
        0.10, ge=0, le=1, description="Warn when train's vulnerable share moves by more."
    )
    max_length_ks: float = Field(
        0.15, ge=0, le=1, description="Warn when the KS statistic of function lengths is larger."
    )
    max_collected_share: float = Field(
        0.30, ge=0, le=1, description="Warn when collected rows weigh more than this in train."
    )
    max_project_tv: float = Field(
        0.30, ge=0, le=1, description="Warn when the projects' total-variation distance is larger."
    )


class Phase2Config(BaseModel):
    """The parameter of the ``phase2`` flow: score -> weight -> merge -> retrain -> compare."""

    model_config = ConfigDict(extra="forbid")

    phase1_root: str = Field(
        "runs/pipeline", description="A finished pipeline run (its data/ and models x seeds)."
    )
    collected_dir: str = Field(
        "runs/collected", description="A `collect` output directory (functions.jsonl per source)."
    )
    output_root: str = Field("runs/phase2", description="Where phase 2 writes.")
    scorers: list[str] | None = Field(
        None,
        description="Phase-1 models (run names) whose every seed scores the collected functions "
        "(default: every base model of the phase-1 run).",
    )
    noise: NoiseConfig = Field(default_factory=NoiseConfig, description="Noise reduction.")
    merge: MergeConfig = Field(default_factory=MergeConfig, description="Merge and split.")
    retrain: PipelineConfig = Field(
        default_factory=lambda: PipelineConfig(),
        description="The phase-2 training run: its plan, criteria and backend (data inputs, "
        "output_root and train.use_weights are set by phase 2).",
    )


# --------------------------------------------------------------------------- scan


class ScanConfig(BaseModel):
    """``streamguard scan``: which files are read and how functions are scored."""

    model_config = ConfigDict(extra="forbid")

    max_file_bytes: int = Field(
        5_000_000, ge=1, description="Skip (with a reason) files larger than this."
    )
    max_function_lines: int = Field(
        20_000, ge=1, description="Skip (with a reason) functions longer than this."
    )
    batch_size: int = Field(64, ge=1, description="Functions per forward pass.")
    explain: Literal["flagged", "all", "none"] = Field(
        "flagged",
        description="Which findings get their most relevant lines (attributions cost a few "
        "forward/backward passes per function): flagged ones, all, or none.",
    )
    top_lines: int = Field(
        5, ge=1, le=100, description="Lines reported per explained finding (highest score first)."
    )
    ig_steps: int = Field(
        16, ge=2, le=512,
        description="Integrated-gradients steps for the neural models (more: closer to the "
        "exact integral, slower).",
    )  # fmt: skip
    use_onnx: bool = Field(
        True,
        description="Score with onnxruntime when the model directory holds model.onnx and "
        "onnxruntime is installed (attributions always use torch).",
    )
    workers: int = Field(
        1, ge=1, le=64,
        description="Scoring processes (each loads the model once and scores whole batches "
        "with one thread); more than 1 pays off on big trees, a few thousand functions.",
    )  # fmt: skip


class ScanRepositoryConfig(BaseModel):
    """The ``scan-repository`` flow: what to scan, with which model, where the results go."""

    model_config = ConfigDict(extra="forbid")

    paths: list[str] = Field(
        default_factory=lambda: ["."],
        description="Files and directories to scan (with git_diff: paths that limit the diff).",
    )
    git_diff: str | None = Field(
        None,
        description="A..B, A...B or one revision (against the work tree): only the functions "
        "the change touches.",
    )
    repo: str = Field(".", description="The git work tree of git_diff (and the SARIF root).")
    model_dir: str | None = Field(None, description="A saved detector (overrides registry).")
    registry: str = Field(
        "runs/registry", description="A model registry: its production model scores the code."
    )
    threshold: float | None = Field(
        None, ge=0.0, le=1.0, description="Flag at or above this (default: the model's own)."
    )
    fail_on: float | None = Field(
        None, ge=0.0, le=1.0,
        description="The flow run fails when a function scores at or above this (a CI gate).",
    )  # fmt: skip
    output_dir: str = Field(
        "runs/scans", description="Each run writes <output_dir>/<run name>/ (SARIF, JSON Lines)."
    )
    top: int = Field(20, ge=1, le=1000, description="Findings in the UI's table artifact.")
    scan: ScanConfig = Field(
        default_factory=lambda: ScanConfig(), description="Files, batching and explanations."
    )


# --------------------------------------------------------------------------- serve


class ServeConfig(BaseModel):
    """``streamguard serve``: the HTTP scoring service (and SageMaker's serving contract)."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(
        "127.0.0.1",
        description="Bind address. Any address other than loopback requires a bearer token.",
    )
    port: int = Field(8080, ge=0, le=65535, description="Port (8080 is SageMaker's; 0: any free).")
    token_env: str = Field(
        "STREAMGUARD_API_TOKEN", description="Environment variable holding the bearer token."
    )
    token_block: str | None = Field(
        None, description="Prefect Secret block holding the token (preferred over token_env)."
    )
    max_request_bytes: int = Field(
        2_000_000, ge=1, description="Larger request bodies are refused with 413."
    )
    max_functions: int = Field(256, ge=1, description="Functions per request (more: 413).")
    max_function_chars: int = Field(
        200_000, ge=1, description="Characters per function (longer: 413)."
    )
    timeout_s: float = Field(
        60.0,
        gt=0,
        description="A request still scoring after this answers 503 (the server stays up).",
    )
    concurrency: int = Field(
        4, ge=1, description="Requests scored at once; the rest wait (bounded by timeout_s)."
    )
    batch_size: int = Field(64, ge=1, description="Functions per forward pass.")
    explain: Literal["flagged", "all", "none"] = Field(
        "none",
        description="Which findings get their most relevant lines when a request does not say "
        "(attributions cost a few forward/backward passes per function, so a service answers "
        "faster without them): flagged ones, all, or none.",
    )
    top_lines: int = Field(
        5, ge=1, le=100, description="Lines per explained finding when a request does not say."
    )
    ig_steps: int = Field(
        16, ge=2, le=512, description="Integrated-gradients steps for the neural explainers."
    )
    use_onnx: bool = Field(
        True,
        description="Score with onnxruntime when the model directory holds model.onnx and "
        "onnxruntime is installed.",
    )
