"""Secrets never reach what StreamGuard writes: artefacts, exp_config.json, run_status.json,
summaries, logs, error lines.

Real credentials-shaped values are planted where a user puts them (the environment: AWS keys,
GitHub and NVD tokens, the serve token, a Slack webhook URL; a clone URL with a token in the
collect config; a URL with a password on the command line), the real small paths run (a local
baseline training job through the core, the collectors against a local HTTP server, a
SageMaker job spec, the webhook installer's report, the CLI), and every file written under
the output directory plus the captured logs and output are searched for the values.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from streamguard_core import cli
from streamguard_core.config import (
    BaselineConfig,
    CollectConfig,
    FixExtractConfig,
    GitHubSourceConfig,
    HttpConfig,
    NVDSourceConfig,
    TrainConfig,
    TrainJobSpec,
)
from streamguard_core.io import atomic_write_json
from streamguard_core.redact import REDACTED, RedactingFilter, redact_text
from tests.core.collect.test_nvd_collector import cve, ref

GITHUB_TOKEN = "ghp_R4nd0mT0k3nV4lu3F0rT3st1ngOnly0123xx"  # ghp_ + 36
SECRETS = {
    "AWS_ACCESS_KEY_ID": "AKIAZ7Q3EXAMPLE4TEST",
    "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI/K7MDENG/bPxRfiCYzEXAMPLEKEY",
    "AWS_SESSION_TOKEN": "IQoJb3JpZ2luX2VjEXAMPLEsessionTOKENvalue0123456789abcdef",
    "GITHUB_TOKEN": GITHUB_TOKEN,
    "GITHUB_PAT": "github_pat_11ABCDEFG0aBcDeFgHiJkL_mNoPqRsTuVwXyZ0123456789",
    "NVD_API_KEY": "0f3c9a77-5b1e-4c55-9d2a-7e0d3c4b5a61",
    "STREAMGUARD_API_TOKEN": "sg-serve-token-7d41c2e9b0",
    "STREAMGUARD_WEBHOOK_URL": "https://hooks.slack.com/services/T0ABCDEF1/B0ABCDEF2/"
    "abcdefghijklmnopqrstuvwx",
}
GITHUB_URL = "https://github.com/demo/demo"


@pytest.fixture
def planted(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The secrets, set in the environment."""
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    return SECRETS


def leaks(texts: dict[str, str], secrets: list[str]) -> list[str]:
    """'where: secret' for every secret found in the texts."""
    return [f"{where}: {s[:12]}..." for where, text in texts.items() for s in secrets if s in text]


def written_files(root: Path) -> dict[str, str]:
    """Every file under ``root`` (binary files decoded leniently), by relative path."""
    return {
        str(p.relative_to(root)): p.read_bytes().decode("utf-8", "replace")
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_training_job_writes_no_secret(planted, make_processed, tmp_path, caplog, capsys) -> None:
    from streamguard_core.training.job import run_job

    caplog.set_level(logging.DEBUG)
    data = make_processed(pairs=5, vocab_size=400, max_seq_len=96)
    run_dir = tmp_path / "run"
    spec = TrainJobSpec(model=BaselineConfig(), seed=3, data_dir=str(data), run_dir=str(run_dir),
                        train=TrainConfig(num_threads=1))  # fmt: skip
    assert run_job(spec).status == "completed"
    files = written_files(run_dir)
    assert {"exp_config.json", "run_status.json", "training.log", "metrics.json"} <= set(files)
    out = capsys.readouterr()
    texts = {**files, "log records": caplog.text, "stdout": out.out, "stderr": out.err}
    assert not leaks(texts, list(planted.values()))


def test_run_status_error_is_redacted(planted, tmp_path) -> None:
    """A failed job whose error names a clone URL with a token: run_status.json hides it."""
    from streamguard_core.training.job import RunStatus

    error = f"FileNotFoundError: https://x-access-token:{GITHUB_TOKEN}@github.com/o/d.git"
    status = RunStatus(model="gnn", kind="gnn", seed=1, status="failed", error=error,
                       run_dir=str(tmp_path))  # fmt: skip
    text = status.write().read_text()
    assert GITHUB_TOKEN not in text
    assert json.loads(text)["error"] == (
        f"FileNotFoundError: https://{REDACTED}@github.com/o/d.git"
    )


def _serve_collect(server) -> None:
    Reply = server.Reply
    item = cve(1, [ref(f"{GITHUB_URL}/commit/{'a' * 40}", "Patch")])
    page = {"resultsPerPage": 1, "startIndex": 0, "totalResults": 1, "format": "NVD_CVE",
            "version": "2.0", "vulnerabilities": [item]}  # fmt: skip
    server.route("GET", "/rest/json/cves/2.0", [Reply(status=503), Reply(json=page)])
    server.route("GET", "/advisories", [Reply(status=401, json={"message": "Bad credentials"})])


def test_collectors_write_and_log_no_secret(
    planted,
    fault_server,
    sleeps,
    tmp_path,
    caplog,
    capsys,
) -> None:
    from streamguard_core.collect.store import collect_all

    caplog.set_level(logging.DEBUG)
    _serve_collect(fault_server)
    # a user's clone URL with a token (the port is closed: the clone fails, its error is kept)
    clone_url = f"https://x-access-token:{GITHUB_TOKEN}@127.0.0.1:9/demo/demo.git"
    out_dir = tmp_path / "collected"
    config = CollectConfig(
        sources=[
            NVDSourceConfig(
                api_url=f"{fault_server.url}/rest/json/cves/2.0", request_interval_s=0.0
            ),
            GitHubSourceConfig(api_url=fault_server.url),
        ],
        output_dir=str(out_dir),
        http=HttpConfig(timeout_s=2.0, max_retries=2, backoff_s=0.01),
        fixes=FixExtractConfig(repos={GITHUB_URL: clone_url}, git_timeout_s=20),
    )
    summary = collect_all(config, sleep=sleeps)
    by_name = {s["name"]: s for s in summary["sources"]}
    assert by_name["github"]["rejects_by_reason"] == {"http_error": 1}  # the 401
    assert by_name["nvd"]["rejects_by_reason"] == {"repo_unavailable": 1}  # the failed clone
    # the secrets were really in play: sent to the server, named in the config
    sent = {k: v for r in fault_server.requests for k, v in r.headers.items()}
    assert sent.get("authorization", "").endswith(GITHUB_TOKEN)
    assert sent.get("apikey") == SECRETS["NVD_API_KEY"]
    out = capsys.readouterr()
    texts = {**written_files(out_dir), "log records": caplog.text, "stdout": out.out,
             "stderr": out.err}  # fmt: skip
    assert not leaks(texts, list(planted.values()))


def test_git_cache_keeps_the_token_in_memory_only(tmp_path) -> None:
    """The fix extractor's cache stores a clone URL without its token, and git still fetches
    with it: ``remote get-url`` (which applies the in-memory rewrite) gives the full URL."""
    import subprocess

    from streamguard_core.collect.fixes import FixExtractor

    url = f"https://x-access-token:{GITHUB_TOKEN}@git.example.org/demo/demo.git"
    extractor = FixExtractor(FixExtractConfig(), tmp_path / "git")
    repo = tmp_path / "git" / "demo.git"
    extractor._init_repository(repo, url)
    assert GITHUB_TOKEN not in (repo / "config").read_text()
    get_url = [extractor.git, "--git-dir", str(repo), "remote", "get-url", "origin"]
    used = subprocess.run(get_url, env=extractor._env, capture_output=True, text=True, check=True)
    assert used.stdout.strip() == url


def test_sagemaker_job_spec_carries_no_secret(planted, tmp_path) -> None:
    from streamguard_core.aws.config import SageMakerConfig, redact, spec_hyperparameters
    from streamguard_core.backends.sagemaker import container_spec, job_spec

    cfg = SageMakerConfig(
        image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/sg:1",
        role_arn="arn:aws:iam::123456789012:role/sg",
        bucket="sg-bucket",
    )
    spec = TrainJobSpec(model=BaselineConfig(), seed=1, data_dir=str(tmp_path / "data"),
                        run_dir=str(tmp_path / "run"))  # fmt: skip
    sm_spec = job_spec(cfg, "run-1", spec, "s3://sg-bucket/data/abc")
    texts = {
        "hyperparameters": json.dumps(spec_hyperparameters(container_spec(spec))),
        "request": json.dumps(sm_spec.to_request()),
        "jobs file entry": json.dumps(redact(sm_spec.model_dump(mode="json"))),
    }
    assert not leaks(texts, list(planted.values()))


def test_webhook_installer_reports_no_url_path(planted) -> None:
    """``deployments.install`` prints which URL its block posts to: never the secret path."""
    pytest.importorskip("prefect")
    from deployments.install import redact as redact_webhook

    url = SECRETS["STREAMGUARD_WEBHOOK_URL"]
    assert redact_webhook(url) == "https://hooks.slack.com/..."
    assert redact_text(f"POST {url} failed") == f"POST https://hooks.slack.com/{REDACTED} failed"
    discord = "https://discord.com/api/webhooks/123456789/AbCdEf-token_value"
    assert redact_text(discord) == f"https://discord.com/api/webhooks/{REDACTED}"


def test_cli_error_line_hides_credentials(planted, baseline_dir, capsys) -> None:
    """A real model, so the error is about the data location (which names the password).
    The password is in no environment variable: only the URL pattern can hide it, also after
    pathlib collapsed ``https://`` to ``https:/``."""
    password = "n0t-in-the-env-9f3c1a"
    data = f"https://user:{password}@data.example.org/devign.jsonl"
    code = cli.main(["evaluate", "--model-dir", str(baseline_dir), "--data", data])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("streamguard: error: ")
    assert "data.example.org/devign.jsonl" in err, err
    assert password not in err, err


def test_atomic_json_redacts_values_and_keeps_the_rest(planted, tmp_path) -> None:
    sha = "0123456789abcdef0123456789abcdef01234567"
    data = {
        "token_env": "GITHUB_TOKEN",  # a variable's name is no secret
        "commit": sha,
        "url": "https://api.github.com/advisories?per_page=100&after=Y3Vyc29y",
        "env_value": f"token {SECRETS['STREAMGUARD_API_TOKEN']} used",
        "nested": [{"hook": SECRETS["STREAMGUARD_WEBHOOK_URL"]}, SECRETS["AWS_ACCESS_KEY_ID"]],
        "query": "https://x.example/api?api_key=abcdef123456&page=2",
        SECRETS["GITHUB_PAT"]: 1,
    }
    written = json.loads(atomic_write_json(tmp_path / "a.json", data).read_text())
    assert written["token_env"] == "GITHUB_TOKEN" and written["commit"] == sha
    assert written["url"] == data["url"]
    assert written["env_value"] == f"token {REDACTED} used"
    assert written["nested"] == [{"hook": f"https://hooks.slack.com/{REDACTED}"}, REDACTED]
    assert written["query"] == f"https://x.example/api?api_key={REDACTED}&page=2"
    assert written[REDACTED] == 1
    raw = atomic_write_json(tmp_path / "b.json", data, redact=False).read_text()
    assert SECRETS["GITHUB_PAT"] in raw  # state that must round-trip can opt out


def test_redacting_filter_on_a_log_file(planted, tmp_path) -> None:
    log_file = tmp_path / "training.log"
    handler = logging.FileHandler(log_file)
    handler.addFilter(RedactingFilter())
    logger = logging.getLogger("streamguard.test_redact")
    logger.addHandler(handler)
    try:
        logger.warning(
            "pushing with %s to %s",
            SECRETS["GITHUB_TOKEN"],
            "https://hooks.slack.com/services/T1/B2/c3",
        )
        try:
            raise OSError(
                f"cannot open s3://b/k?X-Amz-Signature=abcdef0123&X-Amz-Credential={SECRETS['AWS_ACCESS_KEY_ID']}"
            )
        except OSError:
            logger.exception("upload failed")
    finally:
        logger.removeHandler(handler)
        handler.close()
    text = log_file.read_text()
    assert "pushing with *** to https://hooks.slack.com/***" in text
    assert "Traceback" in text and "X-Amz-Signature=***" in text
    assert not leaks({"training.log": text}, list(planted.values()))
