"""Content-addressed channel upload, prefix download and checkpoint sync against moto's S3."""

from __future__ import annotations

import json
import shutil

import boto3
import pytest
from _aws_testkit import BUCKET

from streamguard_core.aws.jobs import download_model
from streamguard_core.aws.s3 import (
    DirSync,
    download_prefix,
    list_keys,
    parse_s3_uri,
    upload_channel,
)
from streamguard_core.aws.tarsafe import UnsafeArchiveError

pytestmark = pytest.mark.integration


@pytest.fixture
def s3(endpoints):
    # endpoint from AWS_ENDPOINT_URL, as boto3 resolves it: nothing is hardcoded
    return boto3.session.Session().client("s3")


def _count_puts(s3) -> list[str]:
    puts: list[str] = []
    s3.meta.events.register(
        "provide-client-params.s3.PutObject", lambda params, **kw: puts.append(params["Key"])
    )
    s3.meta.events.register(
        "provide-client-params.s3.CreateMultipartUpload",
        lambda params, **kw: puts.append(params["Key"]),
    )
    return puts


def test_upload_channel_is_content_addressed_and_skips_unchanged_data(s3, tmp_path):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "train" / "records.jsonl").write_text('{"id": 1}\n')
    (data / "preprocessing_metadata.json").write_text("{}")
    puts = _count_puts(s3)
    uri = upload_channel(s3, data, BUCKET, "t1/data")
    bucket, prefix = parse_s3_uri(uri)
    assert bucket == BUCKET and prefix.startswith("t1/data/") and uri.endswith("/")
    assert sorted(list_keys(s3, BUCKET, prefix)) == [
        f"{prefix}preprocessing_metadata.json",
        f"{prefix}train/records.jsonl",
    ]
    manifest = json.loads(
        s3.get_object(Bucket=BUCKET, Key=prefix.rstrip("/") + ".manifest.json")["Body"].read()
    )
    assert set(manifest["files"]) == {"preprocessing_metadata.json", "train/records.jsonl"}
    assert len(puts) == 3  # two files and the manifest, written last

    puts.clear()
    again = upload_channel(s3, shutil.copytree(data, tmp_path / "copy"), BUCKET, "t1/data")
    assert again == uri and puts == []  # same content elsewhere on disk: nothing uploaded

    (data / "train" / "records.jsonl").write_text('{"id": 2}\n')
    assert upload_channel(s3, data, BUCKET, "t1/data") != uri


def test_upload_channel_refuses_a_missing_or_empty_directory(s3, tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        upload_channel(s3, tmp_path / "nope", BUCKET, "t2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no files"):
        upload_channel(s3, tmp_path / "empty", BUCKET, "t2")


def test_download_prefix_mirrors_and_refuses_escaping_keys(s3, tmp_path):
    s3.put_object(Bucket=BUCKET, Key="t3/ok/a.txt", Body=b"a")
    s3.put_object(Bucket=BUCKET, Key="t3/ok/sub/b.txt", Body=b"b")
    files = download_prefix(s3, f"s3://{BUCKET}/t3/ok/", tmp_path / "out")
    assert sorted(p.relative_to(tmp_path / "out").as_posix() for p in files) == [
        "a.txt",
        "sub/b.txt",
    ]
    s3.put_object(Bucket=BUCKET, Key="t3/bad/../../evil.txt", Body=b"x")
    with pytest.raises(ValueError, match="outside"):
        download_prefix(s3, f"s3://{BUCKET}/t3/bad/", tmp_path / "bad")
    assert not (tmp_path / "evil.txt").exists()


def test_dir_sync_uploads_only_what_changed(s3, tmp_path):
    root = tmp_path / "checkpoints"
    (root / "run" / "checkpoints" / "latest").mkdir(parents=True)
    (root / "run" / "checkpoints" / ".latest.tmp").mkdir()
    (root / "run" / "checkpoints" / "latest" / "meta.json").write_text("{}")
    (root / "run" / "checkpoints" / ".latest.tmp" / "state.pt").write_text("half")
    sync = DirSync(root, f"s3://{BUCKET}/t4/ck/")
    assert sync.sync(s3) == ["run/checkpoints/latest/meta.json"]  # staging dirs skipped
    assert sync.sync(s3) == []
    (root / "run" / "training.log").write_text("step 2")
    assert sync.sync(s3) == ["run/training.log"]
    assert sorted(list_keys(s3, BUCKET, "t4/ck/")) == [
        "t4/ck/run/checkpoints/latest/meta.json",
        "t4/ck/run/training.log",
    ]


def test_download_model_refuses_a_malicious_tarball(s3, tmp_path):
    import io
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        ok = tarfile.TarInfo("metrics.json")
        ok.size = 2
        tar.addfile(ok, io.BytesIO(b"{}"))
        link = tarfile.TarInfo("model/weights")
        link.type, link.linkname = tarfile.SYMTYPE, "/root/.aws/credentials"
        tar.addfile(link)
    s3.put_object(Bucket=BUCKET, Key="t5/model.tar.gz", Body=buffer.getvalue())
    dest = tmp_path / "run"
    with pytest.raises(UnsafeArchiveError, match=r"model/weights.*symbolic link"):
        download_model(s3, f"s3://{BUCKET}/t5/model.tar.gz", dest)
    assert not (dest / "metrics.json").exists()
    assert list(dest.iterdir()) == []  # the temporary download is gone too
