"""``streamguard serve``'s application over real HTTP: a real uvicorn on 127.0.0.1 (a thread),
a real baseline detector trained in the fixture, httpx as the client.

Every answer is checked against the detector called directly and against tree-sitter's own
extraction of the functions, never against hard-coded numbers.
"""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from streamguard_core.collect.functions import extract_file_functions
from streamguard_core.config import ServeConfig
from streamguard_core.data.synthetic import generate_synthetic
from streamguard_core.models.baseline import BaselineDetector
from streamguard_core.models.registry import load_detector
from streamguard_core.serve.app import is_loopback

pytestmark = pytest.mark.integration

CODE = """\
#include <string.h>

static int add(int a, int b)
{
    return a + b;
}

int copy_name(char *dst, const char *src)
{
    char buf[16];
    strcpy(buf, src);
    strcpy(dst, buf);
    return 0;
}
"""
CPP = """\
namespace util {
int clamp(int v, int lo, int hi) {
    if (v < lo) return lo;
    return v > hi ? hi : v;
}
}
"""
CLASS = """\
class Box {
 public:
  int area() const { return w * h; }
  void grow(std::vector<int> &v) { v.push_back(w); }
  int w, h;
};
"""
TOKEN = "s3cret-token-for-tests"


def direct(model_dir: Path, texts: list[str]) -> np.ndarray:
    return load_detector(model_dir).predict_proba(texts)


def healthy(client: httpx.Client, headers: dict[str, str] | None = None) -> bool:
    response = client.get("/health", headers=headers)
    return response.status_code == 200 and response.json()["status"] == "ok"


def test_health_model_and_scan_of_a_file(model_dir: Path, serve) -> None:
    defs, _, _ = extract_file_functions("x.c", CODE)
    expected = direct(model_dir, [d.text for d in defs])
    card = json.loads((model_dir / "model_card.json").read_text())
    with serve(model_dir) as url, httpx.Client(base_url=url) as client:
        health = client.get("/health").json()
        assert health["model"] == {"kind": "baseline", "backend": "scikit-learn",
                                   "threshold": card["threshold"]}  # fmt: skip
        assert client.get("/model").json() == card
        answer = client.post("/scan", json={"code": CODE, "filename": "x.c"}).json()
    found = answer["findings"]
    assert [(f["function"], f["start_line"], f["end_line"]) for f in found] == [
        (d.name, d.start_line, d.end_line) for d in defs
    ]
    assert [f["function"] for f in found] == ["add", "copy_name"]
    np.testing.assert_allclose([f["probability"] for f in found], expected, rtol=1e-12)
    assert [f["flagged"] for f in found] == [bool(p >= card["threshold"]) for p in expected]
    assert answer["threshold"] == card["threshold"] and answer["functions"] == 2
    assert answer["flagged"] == sum(f["flagged"] for f in found)
    assert {f["file"] for f in found} == {"x.c"} and {f["language"] for f in found} == {"c"}
    assert all(f["lines"] == [] for f in found) and answer["explain"] == "none"


def test_functions_threshold_and_language_detection(model_dir: Path, serve) -> None:
    funcs = [CODE.split("\n\n")[2], "void noop(void) { }", CPP]
    expected = direct(model_dir, funcs)
    cutoff = float(np.median(expected))
    with serve(model_dir) as url, httpx.Client(base_url=url) as client:
        answer = client.post("/scan", json={"functions": funcs, "threshold": cutoff}).json()
        cpp = client.post("/scan", json={"code": CLASS}).json()  # no filename: C or C++
    found = answer["findings"]
    assert [f["file"] for f in found] == ["functions[0]", "functions[1]", "functions[2]"]
    assert [f["function"] for f in found] == ["copy_name", "noop", "functions[2]"]
    np.testing.assert_allclose([f["probability"] for f in found], expected, rtol=1e-12)
    assert [f["flagged"] for f in found] == [bool(p >= cutoff) for p in expected]
    assert answer["threshold"] == cutoff
    assert [(f["start_line"], f["end_line"]) for f in found][1] == (1, 1)
    assert [(f["function"], f["language"], f["file"]) for f in cpp["findings"]] == [
        ("Box::area", "cpp", "<code>"),
        ("Box::grow", "cpp", "<code>"),
    ]


def test_explanations_point_at_lines_of_the_function(model_dir: Path, serve) -> None:
    with serve(model_dir) as url, httpx.Client(base_url=url) as client:
        answer = client.post(
            "/scan", json={"code": CODE, "filename": "x.c", "explain": "all", "top_lines": 2}
        ).json()
    lines = CODE.splitlines()
    for finding in answer["findings"]:
        assert 1 <= len(finding["lines"]) <= 2
        scores = [line["score"] for line in finding["lines"]]
        assert scores == sorted(scores, reverse=True)
        for line in finding["lines"]:  # file line numbers, inside the function, never blank
            assert finding["start_line"] <= line["line"] <= finding["end_line"]
            assert lines[line["line"] - 1].strip().strip("{}").strip()
    copy = next(f for f in answer["findings"] if f["function"] == "copy_name")
    assert any("strcpy" in lines[line["line"] - 1] for line in copy["lines"])


def test_bearer_token(model_dir: Path, serve) -> None:
    good = {"Authorization": f"Bearer {TOKEN}"}
    body = {"functions": ["int f(void) { return 0; }"]}
    with serve(model_dir, token=TOKEN) as url, httpx.Client(base_url=url) as client:
        for path in ("/health", "/model"):
            assert client.get(path).status_code == 401
            assert client.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
            assert client.get(path, headers={"Authorization": TOKEN}).status_code == 401
            assert client.get(path, headers=good).status_code == 200
        for path in ("/scan", "/invocations"):  # outside SageMaker mode both need it
            refused = client.post(path, json=body)
            assert refused.status_code == 401
            assert refused.headers["www-authenticate"] == "Bearer"
            assert "bearer token" in refused.json()["detail"]
            assert client.post(path, json=body, headers=good).status_code == 200
        assert client.get("/ping").status_code == 200  # health checks carry no token
        assert client.get("/docs").status_code == 404  # no unauthenticated API browser


def test_sagemaker_mode_invocations_need_no_token(model_dir: Path, serve) -> None:
    defs, _, _ = extract_file_functions("x.c", CODE)
    with (
        serve(model_dir, token=TOKEN, sagemaker=True) as url,
        httpx.Client(base_url=url) as client,
    ):
        assert client.get("/ping").status_code == 200 and client.get("/ping").content == b""
        raw = client.post("/invocations", content=CODE, headers={"Content-Type": "text/plain"})
        as_json = client.post("/invocations", json={"code": CODE, "filename": "x.c"})
        assert client.post("/scan", json={"code": CODE}).status_code == 401
    assert raw.status_code == 200 and as_json.status_code == 200
    assert raw.headers["content-type"] == "application/json"
    assert [f["function"] for f in raw.json()["findings"]] == [d.name for d in defs]
    assert [f["probability"] for f in raw.json()["findings"]] == [
        f["probability"] for f in as_json.json()["findings"]
    ]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True), ("[::1]", True),
     ("localhost", True), ("0.0.0.0", False), ("::", False), ("10.1.2.3", False),
     ("example.com", False)],
)  # fmt: skip
def test_loopback_addresses(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_refuses_a_public_bind_without_a_token(
    model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamguard_core.cli import main

    assert main(["serve", "--model-dir", str(model_dir), "--host", "0.0.0.0"]) == 2
    err = capsys.readouterr().err
    assert "refusing to serve on 0.0.0.0 without a bearer token" in err
    assert "STREAMGUARD_API_TOKEN" in err and "Traceback" not in err
    # a Secret block is the orchestration layer's to read
    assert main(["serve", "--model-dir", str(model_dir), "--token-block", "x"]) == 2
    assert "python -m flows.serve" in capsys.readouterr().err
    # no model flag outside a SageMaker container: a usage error, not a traceback
    assert main(["serve"]) == 2
    assert "give --model-dir DIR or --registry DIR" in capsys.readouterr().err


def test_limits_answer_413_and_the_server_stays_up(model_dir: Path, serve) -> None:
    cfg = ServeConfig(port=0, max_request_bytes=3000, max_functions=3, max_function_chars=200)
    small = "int f(void) { return 0; }"
    with serve(model_dir, cfg) as url, httpx.Client(base_url=url) as client:
        declared = client.post("/scan", json={"functions": ["x" * 150] * 25})
        assert declared.status_code == 413
        assert "max_request_bytes" in declared.json()["detail"]
        assert healthy(client)

        def chunks():  # no Content-Length: the bytes read are counted
            yield b'{"functions": ['
            for _ in range(40):
                yield b'"' + b"y" * 100 + b'",'
            yield b'"z"]}'

        chunked = client.post(
            "/scan", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert chunked.status_code == 413 and "stopped reading" in chunked.json()["detail"]
        assert healthy(client)
        many = client.post("/scan", json={"functions": [small] * 4})
        assert many.status_code == 413 and "max_functions (3)" in many.json()["detail"]
        assert healthy(client)
        long = client.post("/scan", json={"functions": [small, "z" * 201]})
        assert long.status_code == 413
        assert "functions[1] has 201 characters" in long.json()["detail"]
        assert healthy(client)
        file_of_many = "\n".join(f"int f{i}(void) {{ return {i}; }}" for i in range(4))
        too_many = client.post("/scan", json={"code": file_of_many})
        assert too_many.status_code == 413 and "code holds 4 functions" in too_many.json()["detail"]
        body = "int big(void) {\n" + "    x++;\n" * 30 + "}\n"
        long_fn = client.post("/scan", json={"code": body, "filename": "big.c"})
        assert long_fn.status_code == 413
        assert "function big (lines 1-32)" in long_fn.json()["detail"]
        assert healthy(client)
        ok = client.post("/scan", json={"functions": [small] * 3})
        assert ok.status_code == 200 and ok.json()["functions"] == 3


@pytest.mark.parametrize(
    ("body", "status", "names"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"", 400, "empty request body"),
        (b"   ", 400, "empty request body"),
        (b'{"functions": []}', 400, "functions is empty"),
        (b'{"code": "  \\n"}', 400, "code is empty"),
        (b'{"functions": ["int f(void) {}", "  "]}', 400, "functions[1] is empty"),
        (b"{}", 400, "give either code"),
        (b'{"code": "int f(void) {}", "functions": ["x"]}', 400, "not both"),
        (b'{"code": "int f(void) {}", "filename": "f.py"}', 400, "not a C/C++ file"),
        (b'{"functions": "int f(void) {}"}', 422, "functions: Input should be a valid list"),
        (b'{"functions": ["int f(void) {}", 5]}', 422, "functions[1]: Input should be a valid"),
        (b'{"code": 12}', 422, "code: Input should be a valid string"),
        (b'{"code": "int f(void) {}", "threshold": 1.5}', 422, "threshold:"),
        (b'{"code": "int f(void) {}", "threshold": "high"}', 422, "threshold:"),
        (b'{"code": "int f(void) {}", "explain": "some"}', 422, "explain:"),
        (b'{"code": "int f(void) {}", "top_lines": 0}', 422, "top_lines:"),
        (b'{"code": "int f(void) {}", "codes": 1}', 422, "codes: Extra inputs"),
        (b'["int f(void) {}"]', 422, "must be a JSON object"),
        (b'"int f(void) {}"', 422, "must be a JSON object"),
        (b"\xff\xfe\x00garbage", 400, "not valid JSON"),
        # valid JSON, but a lone UTF-16 surrogate is no text (it was a 500)
        (b'{"code": "int f(void) {}\\ud800"}', 400, "code holds a lone surrogate escape"),
        (b'{"functions": ["int f(void) {}", "x\\udfff"]}', 400, "functions[1] holds a lone"),
        (
            b'{"code": "int f(void) {}", "filename": "\\ud83d.c"}',
            422,
            "filename: Input should be a valid string",
        ),
    ],
)
def test_bad_requests_are_named_and_the_server_stays_up(
    model_dir: Path, serve, body: bytes, status: int, names: str
) -> None:
    with serve(model_dir) as url, httpx.Client(base_url=url) as client:
        response = client.post("/scan", content=body, headers={"Content-Type": "application/json"})
        assert response.status_code == status, response.text
        assert names in response.json()["detail"]
        assert healthy(client)


def test_a_file_without_functions_answers_no_findings(model_dir: Path, serve) -> None:
    with serve(model_dir) as url, httpx.Client(base_url=url) as client:
        answer = client.post("/scan", json={"code": "int x = 3;\n", "filename": "x.c"}).json()
    assert answer["findings"] == [] and answer["functions"] == 0


def test_a_burst_of_concurrent_requests_is_answered_correctly(model_dir: Path, serve) -> None:
    texts = [r.func for r in generate_synthetic(pairs_per_cwe=2, seed=11)]
    requests = [texts[i % len(texts) : i % len(texts) + 1 + i % 5] for i in range(32)]
    expected = [direct(model_dir, funcs) for funcs in requests]
    cfg = ServeConfig(port=0, concurrency=3)

    async def burst(url: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            return await asyncio.gather(
                *(client.post("/scan", json={"functions": funcs}) for funcs in requests)
            )

    with serve(model_dir, cfg) as url:
        responses = asyncio.run(burst(url))
    assert [r.status_code for r in responses] == [200] * 32
    for response, funcs, probs in zip(responses, requests, expected, strict=True):
        found = response.json()["findings"]
        assert len(found) == len(funcs)
        np.testing.assert_allclose([f["probability"] for f in found], probs, rtol=1e-12)


class WaitingBaseline(BaselineDetector):
    """A real :class:`BaselineDetector` whose scoring first waits for ``release`` (at most
    30 s): a request that outlives the server's timeout, without a mock."""

    entered: threading.Event
    release: threading.Event

    def predict_proba(self, funcs: list[str]) -> np.ndarray:
        self.entered.set()
        self.release.wait(30)
        return super().predict_proba(funcs)


def test_a_request_over_the_timeout_answers_503_and_the_server_carries_on(
    model_dir: Path, serve
) -> None:
    slow: Any = WaitingBaseline.load(model_dir)
    slow.entered, slow.release = threading.Event(), threading.Event()
    cfg = ServeConfig(port=0, timeout_s=0.5, concurrency=1)
    body = {"functions": ["int f(void) { return 0; }"]}
    with serve(slow, cfg, model_dir=model_dir) as url, httpx.Client(base_url=url) as client:
        late = client.post("/scan", json=body)
        assert slow.entered.is_set()
        assert late.status_code == 503
        assert "timeout_s (0.5 s" in late.json()["detail"] and late.headers["retry-after"]
        assert healthy(client)  # the event loop was never blocked
        queued = client.post("/scan", json=body)  # the only worker is still busy
        assert queued.status_code == 503
        slow.release.set()
        answer = client.post("/scan", json=body)
    assert answer.status_code == 200
    np.testing.assert_allclose(
        answer.json()["findings"][0]["probability"], direct(model_dir, body["functions"])[0]
    )


def test_the_model_card_hides_secret_looking_keys(tmp_path: Path, model_dir: Path, serve) -> None:
    import shutil

    copy = Path(shutil.copytree(model_dir, tmp_path / "model"))
    card = json.loads((copy / "model_card.json").read_text())
    (copy / "model_card.json").write_text(json.dumps({**card, "hf_token": "hf_abc"}))
    with serve(copy) as url, httpx.Client(base_url=url) as client:
        shown = client.get("/model").json()
    assert shown["hf_token"] == "***" and shown["threshold"] == card["threshold"]
