"""S3 transfers for the SageMaker backend, over a caller's boto3 S3 client.

* :func:`upload_channel` uploads a directory (a processed data set) under a content-addressed
  prefix and skips the upload when that content is already there.
* :func:`download_prefix` mirrors a prefix into a directory, refusing keys that would escape it.
* :class:`DirSync` uploads the files of a directory that changed since its last call (the
  checkpoint sync SageMaker does for ``/opt/ml/checkpoints``; the emulator uses it).

The client's endpoint comes from boto3's own configuration (``AWS_ENDPOINT_URL_S3`` or
``AWS_ENDPOINT_URL``), so the same code talks to AWS, moto or MinIO.
"""

from __future__ import annotations

import json
import logging
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from streamguard_core.aws.config import error_code
from streamguard_core.io import sha256_file

log = logging.getLogger("streamguard.aws.s3")

MANIFEST_SUFFIX = ".manifest.json"


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key/prefix`` -> ``("bucket", "key/prefix")``.

    Raises:
        ValueError: not an ``s3://`` URI with a bucket.
    """
    if not uri.startswith("s3://"):
        raise ValueError(f"not an S3 URI: {uri!r} (expected s3://bucket/key)")
    bucket, _, key = uri[len("s3://") :].partition("/")
    if not bucket:
        raise ValueError(f"S3 URI without a bucket: {uri!r}")
    return bucket, key


def s3_uri(bucket: str, key: str) -> str:
    """``s3://bucket/key``."""
    return f"s3://{bucket}/{key}"


def _files(local_dir: Path) -> list[tuple[str, Path]]:
    """(relative POSIX path, path) of every regular file under ``local_dir``, sorted."""
    return sorted(
        (p.relative_to(local_dir).as_posix(), p)
        for p in local_dir.rglob("*")
        if p.is_file() and not p.is_symlink()
    )


def _object_exists(s3: Any, bucket: str, key: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        s3.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchKey", "NotFound"):
            return False
        raise
    return True


def upload_channel(s3: Any, local_dir: str | Path, bucket: str, prefix: str) -> str:
    """Upload ``local_dir`` to ``s3://bucket/<prefix>/<content hash>/``; returns that URI.

    The hash covers every file's relative path and bytes, so the key identifies the content:
    uploading the same data twice (another run, a retry) finds the manifest written after the
    last file of the first upload and transfers nothing. A manifest is written only after all
    files, so a half-finished upload is never taken for a complete one.

    Raises:
        FileNotFoundError: ``local_dir`` is not a directory or holds no files.
    """
    import hashlib

    root = Path(local_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: channel directory not found")
    files = _files(root)
    if not files:
        raise FileNotFoundError(f"{root}: channel directory holds no files")
    hashes = {rel: sha256_file(path) for rel, path in files}
    digest = hashlib.sha256(
        "".join(f"{rel}\0{h}\n" for rel, h in sorted(hashes.items())).encode()
    ).hexdigest()
    base = "/".join(p for p in (prefix.strip("/"), digest[:24]) if p)
    manifest_key = base + MANIFEST_SUFFIX
    uri = s3_uri(bucket, base + "/")
    if _object_exists(s3, bucket, manifest_key):
        log.info("channel %s already in S3 at %s; upload skipped", root, uri)
        return uri
    total = 0
    for rel, path in files:
        s3.upload_file(str(path), bucket, f"{base}/{rel}")
        total += path.stat().st_size
    manifest = {
        "sha256": digest,
        "files": {
            rel: {"sha256": h, "size": (root / rel).stat().st_size} for rel, h in hashes.items()
        },
        "bytes": total,
    }
    s3.put_object(
        Bucket=bucket,
        Key=manifest_key,
        Body=json.dumps(manifest, indent=1).encode(),
        ContentType="application/json",
    )
    log.info("uploaded channel %s (%d files, %d bytes) to %s", root, len(files), total, uri)
    return uri


def list_keys(s3: Any, bucket: str, prefix: str) -> list[str]:
    """Every key under ``prefix`` (paginated)."""
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


def download_prefix(s3: Any, uri: str, dest: str | Path) -> list[Path]:
    """Download every object under ``uri`` into ``dest`` keeping the relative layout.

    Raises:
        ValueError: a key would land outside ``dest`` (``..`` or an absolute remainder).
    """
    bucket, prefix = parse_s3_uri(uri)
    root = Path(dest)
    root.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []
    for key in list_keys(s3, bucket, prefix):
        rel = key[len(prefix) :].lstrip("/")
        if not rel or key.endswith("/"):
            continue  # "directory" placeholder objects
        parts = PurePosixPath(rel).parts
        if ".." in parts or rel.startswith("/"):
            raise ValueError(f"S3 key {key!r} would be written outside {root}")
        target = root.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, key, str(target))
        out.append(target)
    return out


@dataclass
class DirSync:
    """Upload the files of ``local_dir`` that changed since the last :meth:`sync` to ``uri``.

    Changes are seen by (inode, size, mtime), so a file replaced by an atomic rename counts as
    new. Entries whose name starts with ``.`` (the training loop's ``.latest.tmp`` staging
    directories) are skipped: they are half-written by design. Deleted files stay in S3, as they
    do with SageMaker's own checkpoint sync.
    """

    local_dir: Path
    uri: str
    seen: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def changed(self) -> list[tuple[str, Path]]:
        """(relative path, path) of files new or changed since the last sync."""
        out: list[tuple[str, Path]] = []
        # os.walk, not rglob: directories renamed away mid-walk (the atomic checkpoint swap)
        # are skipped instead of raising
        for dirpath, dirnames, filenames in os.walk(self.local_dir):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for filename in filenames:
                if filename.startswith("."):
                    continue
                path = Path(dirpath) / filename
                try:
                    st = path.stat(follow_symlinks=False)
                except FileNotFoundError:  # renamed away while we looked
                    continue
                if not stat.S_ISREG(st.st_mode):
                    continue
                rel = path.relative_to(self.local_dir).as_posix()
                if self.seen.get(rel) != (st.st_ino, st.st_size, st.st_mtime_ns):
                    out.append((rel, path))
        return sorted(out)

    def mark_current(self) -> None:
        """Take the directory as it is now as already synced (e.g. just downloaded)."""
        for rel, path in self.changed():
            st = path.stat()
            self.seen[rel] = (st.st_ino, st.st_size, st.st_mtime_ns)

    def sync(self, s3: Any) -> list[str]:
        """Upload what changed; returns the relative paths uploaded."""
        bucket, prefix = parse_s3_uri(self.uri)
        prefix = prefix.rstrip("/")
        uploaded = []
        for rel, path in self.changed():
            try:
                st = path.stat()
                s3.upload_file(str(path), bucket, f"{prefix}/{rel}" if prefix else rel)
            except FileNotFoundError:  # replaced between the scan and the upload: next round
                continue
            self.seen[rel] = (st.st_ino, st.st_size, st.st_mtime_ns)
            uploaded.append(rel)
        return uploaded
