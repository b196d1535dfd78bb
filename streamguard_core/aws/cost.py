"""SageMaker spend from AWS Cost Explorer, and the ``streamguard aws cost --days N`` command.

Cost Explorer answers from us-east-1 whatever the region of the jobs, bills $0.01 per API
request, and its figures lag by up to a day; per-job costs computed from the job descriptions
(:func:`streamguard_core.aws.jobs.job_cost`) are immediate.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from typing import Any

SAGEMAKER_SERVICE = "Amazon SageMaker"
COST_METRIC = "UnblendedCost"


def sagemaker_spend(
    ce: Any, days: int, end: dt.date | None = None, metric: str = COST_METRIC
) -> dict[str, Any]:
    """Daily and total SageMaker cost over the last ``days`` days (Cost Explorer).

    Args:
        ce: a boto3 Cost Explorer client (``session.client("ce", region_name="us-east-1")``).
        days: days to cover, ending today (``end``, exclusive, default: today UTC).
        metric: the Cost Explorer metric (UnblendedCost, BlendedCost, NetUnblendedCost ...).

    Returns:
        ``{"service", "start", "end", "days", "metric", "currency", "total", "daily": [{"start",
        "end", "amount", "estimated"}]}``.
    """
    if days < 1:
        raise ValueError("days must be >= 1")
    end = end or dt.datetime.now(dt.UTC).date()
    start = end - dt.timedelta(days=days)
    request: dict[str, Any] = {
        "TimePeriod": {"Start": start.isoformat(), "End": end.isoformat()},
        "Granularity": "DAILY",
        "Metrics": [metric],
        "Filter": {"Dimensions": {"Key": "SERVICE", "Values": [SAGEMAKER_SERVICE]}},
    }
    daily: list[dict[str, Any]] = []
    currency = "USD"
    while True:
        page = ce.get_cost_and_usage(**request)
        for row in page.get("ResultsByTime", []):
            amount, unit = _amount(row, metric)
            currency = unit or currency
            period = row.get("TimePeriod", {})
            daily.append(
                {
                    "start": period.get("Start"),
                    "end": period.get("End"),
                    "amount": amount,
                    "estimated": bool(row.get("Estimated", False)),
                }
            )
        token = page.get("NextPageToken")
        if not token:
            break
        request["NextPageToken"] = token
    return {
        "service": SAGEMAKER_SERVICE,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "days": days,
        "metric": metric,
        "currency": currency,
        "total": round(sum(d["amount"] for d in daily), 6),
        "daily": daily,
    }


def _amount(row: dict[str, Any], metric: str) -> tuple[float, str | None]:
    """One period's amount: its Total for ``metric``, else the sum over its Groups."""
    total = row.get("Total") or {}
    if metric in total:
        return float(total[metric].get("Amount", 0.0)), total[metric].get("Unit")
    amount, unit = 0.0, None
    for group in row.get("Groups") or []:
        value = (group.get("Metrics") or {}).get(metric)
        if value:
            amount += float(value.get("Amount", 0.0))
            unit = value.get("Unit", unit)
    return amount, unit


def add_cost_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``aws cost`` to the ``streamguard`` command's subparsers; returns the ``aws`` parser."""
    aws = subparsers.add_parser(
        "aws",
        help="SageMaker backend utilities",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    aws_sub = aws.add_subparsers(dest="aws_command", metavar="SUBCOMMAND", required=True)
    cost = aws_sub.add_parser(
        "cost",
        help="SageMaker spend over the last N days (AWS Cost Explorer)",
        description="Daily and total 'Amazon SageMaker' cost from Cost Explorer (credentials "
        "from the default AWS chain or --profile; each call costs $0.01; figures lag up to a "
        "day).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    cost.add_argument("--days", type=int, default=30, help="days to cover, ending today")
    cost.add_argument("--metric", default=COST_METRIC, help="Cost Explorer cost metric")
    cost.add_argument("--profile", default=None, help="AWS profile (default chain otherwise)")
    cost.add_argument("--json", action="store_true", help="print JSON")
    cost.set_defaults(func=cmd_cost)
    return aws


def cmd_cost(args: argparse.Namespace) -> int:
    """``streamguard aws cost``: print SageMaker spend; 0 ok, 1 AWS error, 2 bad arguments."""
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:
        print(
            "streamguard: error: `aws cost` needs boto3: pip install 'streamguard[aws]'",
            file=sys.stderr,
        )
        return 1
    if args.days < 1:
        print("streamguard: error: --days must be >= 1", file=sys.stderr)
        return 2
    try:
        session = boto3.session.Session(profile_name=args.profile)
        # Cost Explorer has one endpoint, in us-east-1
        report = sagemaker_spend(
            session.client("ce", region_name="us-east-1"), args.days, metric=args.metric
        )
    except (BotoCoreError, ClientError) as exc:
        print(f"streamguard: error: Cost Explorer: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(report, indent=2))
        return 0
    print(
        f"{report['service']} {report['metric']}, {report['start']} to {report['end']} (exclusive):"
    )
    for day in report["daily"]:
        flag = " (estimated)" if day["estimated"] else ""
        print(f"  {day['start']}  {day['amount']:>12,.2f} {report['currency']}{flag}")
    print(f"  total       {report['total']:>12,.2f} {report['currency']}")
    return 0
