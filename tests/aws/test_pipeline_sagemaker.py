"""The SageMaker backend end to end, Prefect -> emulator + moto S3: the sagemaker-emulator preset
drives the same jobs locally and on SageMaker (through a spot interruption, as the README's
rehearsal with --interruptions 1 does); the bucket comes from the S3Bucket block;
train-production on SageMaker; budget guard, failure reason, stop and cancel."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
from _aws_testkit import BUCKET, IMAGE_URI, ROLE_ARN, client, tiny_gnn
from prefect import flow

from streamguard_core.aws.config import SageMakerConfig
from streamguard_core.aws.emulator import TAG_INTERRUPTIONS
from streamguard_core.config import PipelineConfig, TrainJobSpec, load_yaml
from streamguard_core.training.job import RunStatus
from tasks.sagemaker import JOBS_FILE, run_sagemaker_jobs, stop_jobs

PRESET = Path(__file__).resolve().parents[2] / "deployments" / "params" / "sagemaker-emulator.yaml"
BUCKET_BLOCK = "sg-test-bucket"
BUCKET_FOLDER = "team-a"
# a smaller config for the flow tests: every model kind, one seed, a few steps; the bucket comes
# from the S3Bucket block
CONFIG = {
    "data": {"synthetic_pairs_per_cwe": 4},
    "preprocessing": {"workers": 1, "vocab_size": 300, "max_seq_len": 64},
    "plan": {
        "models": [
            {"kind": "baseline"},
            {"kind": "gnn", "hidden_dim": 16, "num_layers": 2, "node_token_dim": 0, "dropout": 0.2},
            {"kind": "transformer", "hidden_size": 32, "num_layers": 1, "dropout": 0.05},
        ],
        "seeds": [42],
        # settings the old hyperparameter mapping dropped on the way to SageMaker, too
        "train": {
            "epochs": 1,
            "max_steps_per_epoch": 3,
            "batch_size": 8,
            "num_threads": 1,
            "checkpoint_every_steps": 2,
            "weight_decay": 0.02,
            "warmup_ratio": 0.2,
            "max_grad_norm": 0.5,
            "use_weights": True,
        },
    },
    "criteria": {"min_mean_f1": 0.0, "max_f1_std": None, "beat_trivial": False},
    "output_root": "unused",
    "backend": "sagemaker",
    "run_preflight": False,
    "s3_bucket_block": BUCKET_BLOCK,
    "sagemaker": {
        "image_uri": IMAGE_URI,
        "role_arn": ROLE_ARN,
        "instance_type": "ml.g4dn.xlarge",
        "max_runtime_s": 3600,
        "poll_s": 0.2,
        "max_poll_s": 1.0,
        "budget_usd": 10.0,
        "max_concurrent_jobs": 3,
    },
}


@flow(name="sagemaker-jobs-under-test")
def sagemaker_jobs_flow(
    data_dir: str,
    specs: list[TrainJobSpec],
    output_root: str,
    cfg: SageMakerConfig,
    s3_bucket_block: str | None = None,
) -> list[RunStatus]:
    """run_sagemaker_jobs in a flow run of its own (what train-production does)."""
    return run_sagemaker_jobs(data_dir, specs, output_root, cfg, None, s3_bucket_block)


@pytest.fixture
def bucket_block(prefect_harness) -> str:
    """The S3Bucket block `python -m deployments.install_aws` saves (default-chain credentials)."""
    from prefect_aws import AwsCredentials, S3Bucket

    S3Bucket(bucket_name=BUCKET, bucket_folder=BUCKET_FOLDER, credentials=AwsCredentials()).save(
        BUCKET_BLOCK, overwrite=True
    )
    return BUCKET_BLOCK


def _log_lines(run_dir: Path, pattern: str) -> list[str]:
    """The messages of training.log that match ``pattern`` (timestamps dropped)."""
    text = (run_dir / "training.log").read_text()
    return [m.group(1) for m in re.finditer(r"^\S+ \S+ [A-Z]+ (" + pattern + r")$", text, re.M)]


def _curves(run_dir: Path) -> dict:
    """training_metadata.json less its timings."""
    meta = json.loads((run_dir / "training_metadata.json").read_text())
    meta.pop("fit_seconds", None)
    meta["history"] = [{k: v for k, v in h.items() if k != "seconds"} for h in meta["history"]]
    return meta


def _spec_ran(run_dir: Path) -> dict:
    """The job spec a run recorded (exp_config.json), less where its files went."""
    saved = json.loads((run_dir / "exp_config.json").read_text())
    saved.pop("run_dir"), saved.pop("resumed")
    return saved


@pytest.mark.integration
def test_fold_jobs_run_on_sagemaker_and_feed_the_fusion(
    prefect_harness, sagemaker_endpoints, emulator, moto_server, tmp_path
):
    """Each fold x model x seed is its own SageMaker job (distinct names and checkpoints); the
    out-of-fold and validation predictions come back, and the fusion trains on them."""
    from streamguard_core.config import TrainingPlan
    from streamguard_core.io import read_jsonl
    from streamguard_core.preprocess.run import preprocess
    from streamguard_core.training.job import run_job
    from streamguard_core.training.paths import RunPaths

    config = load_yaml(PRESET, PipelineConfig)
    assert config.sagemaker is not None and config.sagemaker.bucket
    client("s3", moto_server).create_bucket(Bucket=config.sagemaker.bucket)
    data = tmp_path / "data"
    preprocess(config.data, config.preprocessing, data, show_progress=False)
    plan = TrainingPlan(models=["baseline"], seeds=[42], fusion=True, n_folds=2)
    root = tmp_path / "sagemaker"
    specs = plan.jobs(data, root) + plan.oof_jobs(data, root)
    statuses = sagemaker_jobs_flow(str(data), specs, str(root), config.sagemaker)
    assert [s.status for s in statuses] == ["completed"] * 3, statuses
    assert len({s.job_name for s in statuses}) == 3  # one job per fold, names never collide
    held = [r for spec in specs[1:] for r in read_jsonl(RunPaths(spec.run_dir).oof_predictions)]
    train = list(read_jsonl(data / "train" / "records.jsonl"))
    assert sorted(r["id"] for r in held) == sorted(r["id"] for r in train)
    assert RunPaths(specs[0].run_dir).valid_predictions.is_file()
    (fusion,) = plan.fusion_jobs(data, root)
    assert run_job(fusion).status == "completed"


def _wait_until_training(emulator, out: Path, name_suffix: str, timeout_s: float = 180):
    """The emulator's job whose name ends with ``name_suffix``, once it is Training and the
    flow has listed its jobs (bounded wait)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        training = [j for j in list(emulator.jobs.values()) if j.secondary == "Training"]
        if (out / JOBS_FILE).exists():
            job = next((j for j in training if j.name.endswith(name_suffix)), None)
            if job is not None:
                return job
        time.sleep(0.2)
    raise AssertionError(f"the job *{name_suffix} never started training")


@pytest.mark.integration
def test_the_preset_runs_the_same_jobs_locally_and_on_sagemaker(
    prefect_harness, sagemaker_endpoints, emulator, moto_server, tmp_path
):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey
    from prefect.client.schemas.sorting import ArtifactSort

    from streamguard_core.backends.local import LocalBackend
    from streamguard_core.preprocess.run import preprocess

    config = load_yaml(PRESET, PipelineConfig)
    assert config.backend == "sagemaker" and config.sagemaker and config.sagemaker.bucket
    s3 = client("s3", moto_server)
    s3.create_bucket(Bucket=config.sagemaker.bucket)  # what `--create-bucket` does by hand
    data = tmp_path / "data"
    preprocess(config.data, config.preprocessing, data, show_progress=False)

    local_specs = config.plan.jobs(data, tmp_path / "local")
    local = [LocalBackend().run(spec) for spec in local_specs]
    sm_specs = config.plan.jobs(data, tmp_path / "sagemaker")
    # every job loses its spot instance once, after its first synced checkpoint (what
    # `python -m streamguard_core.aws.emulator --interruptions 1` does to every job)
    spot = config.sagemaker.model_copy(update={"tags": {TAG_INTERRUPTIONS: "1"}})
    on_sagemaker = sagemaker_jobs_flow(str(data), sm_specs, str(tmp_path / "sagemaker"), spot)

    n_jobs = len(config.plan.models) * len(config.plan.seeds)
    assert n_jobs == len(sm_specs) and {m.kind for m in config.plan.models} == {
        "baseline", "gnn", "transformer"}  # fmt: skip
    assert [s.status for s in local] == ["completed"] * n_jobs, local
    assert [s.status for s in on_sagemaker] == ["completed"] * n_jobs, on_sagemaker
    for spec, here, there in zip(sm_specs, local, on_sagemaker, strict=True):
        assert (there.model, there.seed, there.backend) == (spec.name, spec.seed, "sagemaker")
        run_dir, local_dir = Path(spec.run_dir), Path(here.run_dir)
        assert RunStatus.model_validate_json((run_dir / "run_status.json").read_text())
        history = there.secondary_status or []
        if spec.model.kind == "baseline":  # no checkpoints: nothing to count an interruption by
            assert emulator.jobs[there.job_name].exit_codes == [0] and not there.resumed
            assert "Interrupted" not in history
        else:  # interrupted (SIGTERM: 143) after its first checkpoint, restarted, resumed
            assert emulator.jobs[there.job_name].exit_codes == [143, 0], spec.name
            at = history.index("Interrupted")
            assert history[at + 1 : at + 4] == ["Starting", "Downloading", "Training"]
            assert history[-1] == "Completed" and there.resumed is True
            # one training.log across both attempts: attempt 1 checkpointed at step 2, and
            # attempt 2 resumed from there, not from step 0
            (resumed,) = _log_lines(run_dir, r"resumed from .* at epoch \d+ batch \d+")
            epoch, batch = map(int, re.findall(r"\d+", resumed.rsplit(" at ", 1)[1]))
            assert (epoch, batch) > (0, 0), resumed
            text = (run_dir / "training.log").read_text()
            assert text.index("INFO step 2 loss") < text.index(resumed)
            # ... and trained the same steps to the same losses as the uninterrupted local run
            steps = r"step \d+ loss .*"
            assert _log_lines(run_dir, steps) == _log_lines(local_dir, steps) != []
        # training.log and training_metadata.json came back into seed_<n>/ as a local run's
        assert _curves(run_dir) == {**_curves(local_dir), "device": _curves(run_dir)["device"]}
        epochs = r"epoch \d+ .*|baseline: .*"
        assert (
            [re.sub(r"'seconds': [\d.]+, ", "", m) for m in _log_lines(run_dir, epochs)]
            == [re.sub(r"'seconds': [\d.]+, ", "", m) for m in _log_lines(local_dir, epochs)]
            != []
        )
        # the FULL spec each run recorded (model + train + seed, and the data) is the same
        local_ran, sagemaker_ran = _spec_ran(local_dir), _spec_ran(run_dir)
        assert sagemaker_ran == local_ran, spec.name
        assert sagemaker_ran["train"] == spec.train.model_dump(mode="json")
        assert sagemaker_ran["seed"] == spec.seed and sagemaker_ran["data_dir"] == str(data)
        # ... and the same code trained it: the same metrics, to the last digit
        assert (run_dir / "metrics.json").read_text() == (local_dir / "metrics.json").read_text(), (
            spec.name
        )
        cost = there.cost or {}
        assert cost["instance_type"] == "ml.g4dn.xlarge" and cost["managed_spot"] is True
        assert cost["billable_time_s"] <= cost["training_time_s"] and cost["cost_usd"] > 0
    transformer = _spec_ran(Path(next(s for s in sm_specs if s.name == "transformer").run_dir))
    # filled in from the data set, the same way on both
    assert transformer["model"]["max_seq_len"] == config.preprocessing.max_seq_len

    listed = json.loads((tmp_path / "sagemaker" / JOBS_FILE).read_text())
    assert set(listed["jobs"]) == {f"{s.name}/seed_{s.seed}" for s in sm_specs}
    assert "testing" not in json.dumps(listed)  # the kept job specs hold no secrets
    with get_client(sync_client=True) as prefect:
        costs = prefect.read_artifacts(  # this run's: the newest (other tests publish too)
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["sagemaker-costs"])),
            sort=ArtifactSort.CREATED_DESC,
        )
    assert costs and {r["model"] for r in json.loads(costs[0].data)} == {
        "baseline", "gnn", "transformer"}  # fmt: skip


@pytest.mark.integration
def test_train_production_on_sagemaker_takes_the_bucket_from_the_block(
    bucket_block, sagemaker_endpoints, emulator, moto_server, processed, tmp_path
):
    from flows.train_production import train_production

    config = PipelineConfig.model_validate({**CONFIG, "output_root": str(tmp_path / "out")})
    assert config.sagemaker is not None and config.sagemaker.bucket is None
    state = train_production(str(processed), config, return_state=True)
    assert state.is_completed(), state.message
    summary = state.result()
    for spec in config.plan.jobs(processed, config.output_root):
        status = json.loads((Path(spec.run_dir) / "run_status.json").read_text())
        assert status["status"] == "completed" and status["backend"] == "sagemaker", status
        assert emulator.jobs[status["job_name"]].exit_codes == [0]
    assert all(summary["models"][m]["n_completed"] == 1 for m in config.plan.names)
    # the bucket and folder came from the S3Bucket block
    keys = client("s3", moto_server).list_objects_v2(
        Bucket=BUCKET, Prefix=f"{BUCKET_FOLDER}/streamguard/"
    )
    found = [k["Key"] for k in keys.get("Contents", [])]
    assert any("/streamguard/data/" in k for k in found)
    assert any(k.endswith("/output/model.tar.gz") for k in found)
    listed = json.loads((tmp_path / "out" / JOBS_FILE).read_text())
    assert listed["s3_bucket_block"] == BUCKET_BLOCK


def _cfg(**overrides) -> SageMakerConfig:
    return SageMakerConfig.model_validate({**CONFIG["sagemaker"], "bucket": BUCKET, **overrides})


@pytest.mark.integration
def test_budget_guard_refuses_before_any_upload(
    prefect_harness, sagemaker_endpoints, processed, tmp_path
):
    from flows.train_production import train_production
    from streamguard_core.aws.jobs import BudgetExceeded

    config = PipelineConfig.model_validate(
        {**CONFIG, "output_root": str(tmp_path / "out"), "s3_bucket_block": None,
         "sagemaker": {**CONFIG["sagemaker"], "bucket": BUCKET, "budget_usd": 0.5}}
    )  # fmt: skip
    state = train_production(str(processed), config, return_state=True)
    assert state.is_failed()
    with pytest.raises(BudgetExceeded, match=r"exceeds budget_usd \$0\.50"):
        state.result()
    assert not (tmp_path / "out" / JOBS_FILE).exists()


def test_no_bucket_anywhere_is_a_clear_error(prefect_harness, processed, tmp_path):
    from flows.train_production import train_production

    config = PipelineConfig.model_validate(
        {**CONFIG, "output_root": str(tmp_path / "out"), "s3_bucket_block": None}
    )
    state = train_production(str(processed), config, return_state=True)
    assert state.is_failed()
    with pytest.raises(ValueError, match="no S3 bucket for the SageMaker jobs"):
        state.result()
    assert not (tmp_path / "out" / JOBS_FILE).exists()


def test_sagemaker_backend_without_settings_is_a_clear_error():
    with pytest.raises(ValueError, match="needs the 'sagemaker' settings"):
        PipelineConfig.model_validate({**CONFIG, "sagemaker": None})


@pytest.mark.integration
def test_a_failed_job_is_a_failed_status_with_sagemakers_reason(
    bucket_block, sagemaker_endpoints, emulator, processed, tmp_path
):
    spec = TrainJobSpec(
        model={"kind": "transformer", "model_name_or_path": "/no/such/model"},
        train={"epochs": 1, "max_steps_per_epoch": 1, "num_threads": 1},
        seed=5, data_dir=str(processed), run_dir=str(tmp_path / "out" / "transformer" / "seed_5"),
    )  # fmt: skip
    [status] = sagemaker_jobs_flow(
        str(processed), [spec], str(tmp_path / "out"), _cfg(bucket=None), bucket_block
    )
    assert status.status == "failed" and status.backend == "sagemaker"
    assert status.error.startswith("JobFailed: SageMaker training job") and "AlgorithmError:" in (
        status.error
    )
    assert "/no/such/model" in status.error  # the container's own reason, end to end
    assert status.error.endswith(f"(its log: streamguard aws logs {status.job_name})")
    assert status.secondary_status[-1] == "Failed"
    written = json.loads((Path(spec.run_dir) / "run_status.json").read_text())
    assert written["status"] == "failed" and written["error"] == status.error


@pytest.mark.integration
def test_stop_jobs_stops_the_running_jobs(
    prefect_harness, sagemaker_endpoints, emulator, processed, tmp_path
):
    out = tmp_path / "out"
    long_run = tiny_gnn(str(processed), str(out / "gnn" / "seed_11"), epochs=200)
    spec = TrainJobSpec.model_validate({**long_run.model_dump(), "seed": 11})
    assert spec.train.seed == 11
    result: dict = {}
    thread = threading.Thread(
        target=lambda: result.update(
            statuses=sagemaker_jobs_flow(str(processed), [spec], str(out), _cfg())
        )
    )
    thread.start()
    try:
        _wait_until_training(emulator, out, "gnn-s11")
        stop_jobs(str(out), _cfg(), None)
    finally:
        thread.join(timeout=240)
    assert not thread.is_alive()
    [status] = result["statuses"]
    assert status.status == "failed" and "stopped (Stopped)" in (status.error or "")
    assert emulator.jobs[status.job_name].status == "Stopped"
    stop_jobs(str(out), _cfg(), None)  # again, on a stopped job: nothing to do, no error


@pytest.mark.integration
def test_cancelling_the_flow_run_stops_its_sagemaker_job(
    prefect_harness, sagemaker_endpoints, emulator, processed, tmp_path
):
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.states import Cancelling

    from flows.train_production import train_production

    name = f"cancel-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "out"
    config = PipelineConfig.model_validate(
        {**CONFIG, "output_root": str(out), "s3_bucket_block": None,
         "sagemaker": {**CONFIG["sagemaker"], "bucket": BUCKET},
         "plan": {**CONFIG["plan"], "models": [CONFIG["plan"]["models"][1]], "seeds": [44],
                  "train": {**CONFIG["plan"]["train"], "epochs": 200,
                            "max_steps_per_epoch": None}}}
    )  # fmt: skip
    result: dict = {}

    def run() -> None:
        flow = train_production.with_options(flow_run_name=name)
        result["state"] = flow(str(processed), config, return_state=True)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        _wait_until_training(emulator, out, "gnn-s44")
        with get_client(sync_client=True) as prefect:
            run_ = prefect.read_flow_runs(
                flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[name]))
            )[0]
            prefect.set_flow_run_state(run_.id, Cancelling(), force=True)
    finally:
        thread.join(timeout=240)
    assert not thread.is_alive()
    status = json.loads((out / "gnn" / "seed_44" / "run_status.json").read_text())
    assert status["status"] == "failed" and "stopped" in status["error"]
    assert emulator.jobs[status["job_name"]].status == "Stopped"
