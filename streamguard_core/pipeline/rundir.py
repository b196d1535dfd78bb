"""Where one pipeline run writes, and the locks that keep concurrent runs on one output root apart.

``PipelineConfig.run_id`` chooses the layout:

- empty (the default, the layout of every earlier release): the run owns ``output_root``
  (``data/``, ``<model>/seed_<n>/``, ``production_summary/``, ``preflight_report.json``). A
  second run on the same ``output_root`` while the first is running is refused at once
  (:class:`RunDirBusy`), instead of the two overwriting each other's files.
- set: the run writes the same layout into ``output_root/runs/<run_id>/``. Its processed data set
  is shared by every run of that output root with the same data and preprocessing settings and
  the same input file contents: ``output_root/data/<key>/`` (:func:`data_cache_key`), built once
  under ``output_root/data/.<key>.lock`` (a concurrent run with the same key waits, then reuses
  it) and reached from the run directory through the relative symlink
  ``runs/<run_id>/data -> ../../data/<key>``, so ``<run_dir>/data`` works as in the default layout.
- ``auto``: ``run_id`` is the Prefect flow run's name (e.g. ``crimson-tortoise``).

Every run holds ``<run_dir>/.run.lock`` (:func:`hold_run_dir`, :mod:`streamguard_core.locks`)
from its start to its end and deletes it then; the kernel drops the lock when the process ends,
however it ends, so a crashed run never blocks the next one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from streamguard_core import __version__
from streamguard_core.config import DataConfig, PipelineConfig, PreprocessConfig
from streamguard_core.io import sha256_file
from streamguard_core.locks import LockBusy, file_lock, try_lock

RUNS_DIR = "runs"
DATA_DIR = "data"
RUN_LOCK_FILE = ".run.lock"
PREFLIGHT_REPORT = "preflight_report.json"
METADATA_FILE = "preprocessing_metadata.json"  # written last by preprocessing: its end marker
# settings that change how preprocessing runs, not what it writes (its output is byte-identical
# across executors and worker counts), so runs that differ only in them share one data set
_EXECUTION_ONLY = {"workers", "executor", "dask_address"}


class RunDirBusy(RuntimeError):
    """Another pipeline run is writing into this run directory now."""


@dataclass(frozen=True)
class PipelineRunPaths:
    """The files and folders of one pipeline run (see the module docstring for the layouts)."""

    run_dir: Path
    data_dir: Path

    @property
    def preflight_report(self) -> Path:
        """The preflight go/no-go report."""
        return self.run_dir / PREFLIGHT_REPORT

    @property
    def shared_data(self) -> bool:
        """Whether the processed data set is the output root's shared, content-keyed one."""
        return self.data_dir != self.run_dir / DATA_DIR

    @property
    def data_lock(self) -> Path:
        """Held while the shared data set is checked and built."""
        return self.data_dir.parent / f".{self.data_dir.name}.lock"

    def run_config(self, config: PipelineConfig) -> PipelineConfig:
        """``config`` for the stages inside the run: ``output_root`` is the run directory."""
        return config.model_copy(update={"output_root": str(self.run_dir), "run_id": None})


def resolve_run_id(run_id: str | None, flow_run_name: str | None = None) -> str | None:
    """``run_id`` as given, or for ``"auto"`` the flow run's name made a safe folder name.

    Raises:
        ValueError: ``"auto"`` outside a flow run, or a flow run name with no usable character.
    """
    if run_id != "auto":
        return run_id
    if not flow_run_name:
        raise ValueError(
            "run_id 'auto' takes the Prefect flow run's name, but there is no flow run here: "
            "give the run_id itself"
        )
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", flow_run_name).strip("-._")[:128]
    if not name or ".." in name:
        raise ValueError(
            f"run_id 'auto': the flow run name {flow_run_name!r} gives no safe folder name; "
            "give the run_id itself"
        )
    return name


def resolve_run_dir(config: PipelineConfig, flow_run_name: str | None = None) -> Path:
    """``output_root`` (run_id empty) or ``output_root/runs/<run_id>``; cheap (reads no file)."""
    run_id = resolve_run_id(config.run_id, flow_run_name)
    root = Path(config.output_root)
    return root if run_id is None else root / RUNS_DIR / run_id


def data_cache_key(data: DataConfig, preprocessing: PreprocessConfig) -> str:
    """16 hex digits naming the processed data set these settings and input files give.

    Covers both configs (less the execution-only fields ``workers``, ``executor``,
    ``dask_address``), the SHA-256 of every input file and CodeXGLUE split file, and the
    StreamGuard version. A Hugging Face data set (``format: hf``) is keyed by its name only.
    """
    from streamguard_core.preprocess.run import parse_input_spec

    files: dict[str, str] = {}
    paths = [Path(parse_input_spec(spec)[1]) for spec in data.inputs] if data.format != "hf" else []
    if data.codexglue_splits:
        paths += [Path(data.codexglue_splits) / f"{s}.txt" for s in ("train", "valid", "test")]
    for path in paths:
        files[str(path)] = sha256_file(path) if path.is_file() else "missing"
    blob = {
        "data": data.model_dump(mode="json"),
        "preprocessing": preprocessing.model_dump(mode="json", exclude=_EXECUTION_ONLY),
        "files": files,
        "streamguard": __version__,
    }
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def run_paths(config: PipelineConfig, run_dir: Path) -> PipelineRunPaths:
    """The paths of the run in ``run_dir`` (from :func:`resolve_run_dir`); with a run_id this
    hashes the input files for the shared data set's key."""
    if config.run_id is None:
        return PipelineRunPaths(run_dir, run_dir / DATA_DIR)
    key = data_cache_key(config.data, config.preprocessing)
    return PipelineRunPaths(run_dir, Path(config.output_root) / DATA_DIR / key)


@contextmanager
def hold_run_dir(run_dir: str | Path, holder: str) -> Iterator[None]:
    """Hold ``<run_dir>/.run.lock`` for the ``with`` block, or fail at once when it is held.

    Args:
        run_dir: the run directory (created when missing).
        holder: who holds it, e.g. the flow run's name (shown to a refused run).

    Raises:
        RunDirBusy: another run holds it; the message names the directory, the holder and
            the way out (``run_id``).
    """
    lock_path = Path(run_dir) / RUN_LOCK_FILE
    try:
        lock = try_lock(lock_path, what=holder)
    except LockBusy as busy:
        raise RunDirBusy(
            f"{run_dir} is in use by another run: {busy.holder}. Wait for it to end, or give "
            f"each concurrent run its own directory under the output root with run_id "
            f"(--run-id NAME, or 'auto' for the flow run's name). Lock file: {lock_path}"
        ) from None
    with lock:
        yield


@contextmanager
def data_lock(paths: PipelineRunPaths, holder: str) -> Iterator[bool]:
    """Yields whether the run's processed data set is complete; with a shared data set, the
    block holds its lock (the run that builds it first makes the others wait, then reuse it).

    In the default layout the run directory's lock already excludes other writers.
    """
    if not paths.shared_data:
        yield (paths.data_dir / METADATA_FILE).is_file()
        return
    # no timeout: a run waits as long as the concurrent build takes (the builder's process
    # ending, however it ends, frees the lock); the lock logs whom it waits for
    with file_lock(paths.data_lock, what=holder):
        yield (paths.data_dir / METADATA_FILE).is_file()


def link_run_data(paths: PipelineRunPaths) -> None:
    """Point ``<run_dir>/data`` at the shared data set (a relative symlink; no-op otherwise).

    Raises:
        ValueError: ``<run_dir>/data`` is a real directory (not a link this module made).
    """
    if not paths.shared_data:
        return
    link = paths.run_dir / DATA_DIR
    target = os.path.relpath(paths.data_dir, paths.run_dir)
    if link.is_symlink() and os.readlink(link) == target:
        return
    if link.exists() and not link.is_symlink():
        raise ValueError(
            f"{link}: a directory where the link to the shared data set {paths.data_dir} goes; "
            "move it away or use another run_id"
        )
    paths.run_dir.mkdir(parents=True, exist_ok=True)
    tmp = paths.run_dir / f".{DATA_DIR}.{os.getpid()}.tmp"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(target, target_is_directory=True)
    os.replace(tmp, link)  # a rerun with other settings repoints the link in one step
