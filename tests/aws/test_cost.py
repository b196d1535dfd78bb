"""SageMaker spend from Cost Explorer: moto's canned get_cost_and_usage results, and the CLI."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import urllib.request

import boto3
import pytest

from streamguard_core.aws.cost import add_cost_parser, cmd_cost, sagemaker_spend

pytestmark = pytest.mark.integration


def _day(start: str, end: str, amount: str, estimated: bool = False) -> dict:
    return {
        "TimePeriod": {"Start": start, "End": end},
        "Total": {"UnblendedCost": {"Amount": amount, "Unit": "USD"}},
        "Groups": [],
        "Estimated": estimated,
    }


def _queue_results(moto_url: str, *results: dict) -> None:
    request = urllib.request.Request(
        f"{moto_url}/moto-api/static/ce/cost-and-usage-results",
        data=json.dumps({"results": list(results)}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 201


def test_sagemaker_spend_parses_cost_explorer(endpoints):
    _queue_results(
        endpoints,
        {
            "ResultsByTime": [
                _day("2024-05-01", "2024-05-02", "1.25"),
                _day("2024-05-02", "2024-05-03", "0.5", estimated=True),
            ]
        },
    )
    ce = boto3.session.Session().client("ce")
    report = sagemaker_spend(ce, days=2, end=dt.date(2024, 5, 3))
    assert report["service"] == "Amazon SageMaker"
    assert (report["start"], report["end"], report["days"]) == ("2024-05-01", "2024-05-03", 2)
    assert report["total"] == pytest.approx(1.75) and report["currency"] == "USD"
    assert [d["amount"] for d in report["daily"]] == [1.25, 0.5]
    assert [d["estimated"] for d in report["daily"]] == [False, True]


def test_sagemaker_spend_sends_the_service_filter():
    from _aws_testkit import client
    from botocore.stub import Stubber

    ce = client("ce")
    stubber = Stubber(ce)
    expected = {
        "TimePeriod": {"Start": "2024-04-24", "End": "2024-05-01"},
        "Granularity": "DAILY",
        "Metrics": ["UnblendedCost"],
        "Filter": {"Dimensions": {"Key": "SERVICE", "Values": ["Amazon SageMaker"]}},
    }
    stubber.add_response(
        "get_cost_and_usage",
        {"ResultsByTime": [_day("2024-04-24", "2024-04-25", "2")], "NextPageToken": "p2"},
        expected,
    )
    stubber.add_response(
        "get_cost_and_usage",
        {"ResultsByTime": [_day("2024-04-25", "2024-04-26", "3")]},
        {**expected, "NextPageToken": "p2"},
    )
    with stubber:
        report = sagemaker_spend(ce, days=7, end=dt.date(2024, 5, 1))
    assert report["total"] == 5.0 and len(report["daily"]) == 2
    with pytest.raises(ValueError, match="days"):
        sagemaker_spend(ce, days=0)


def test_aws_cost_command(endpoints, capsys):
    parser = argparse.ArgumentParser(prog="streamguard")
    add_cost_parser(parser.add_subparsers(dest="command"))
    today = dt.datetime.now(dt.UTC).date()
    _queue_results(
        endpoints,
        {
            "ResultsByTime": [
                _day((today - dt.timedelta(days=1)).isoformat(), today.isoformat(), "3.5")
            ]
        },
    )
    args = parser.parse_args(["aws", "cost", "--days", "1", "--json"])
    assert args.func is cmd_cost
    assert cmd_cost(args) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["total"] == 3.5 and report["days"] == 1

    args = parser.parse_args(["aws", "cost", "--days", "1"])
    assert cmd_cost(args) == 0  # same parameters: moto answers with the same result
    out = capsys.readouterr().out
    assert "Amazon SageMaker" in out and "3.50 USD" in out

    assert cmd_cost(parser.parse_args(["aws", "cost", "--days", "0"])) == 2
