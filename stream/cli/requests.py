"""Requests about people and products: ``extract`` (register extract), ``bonus``,
``recall`` and ``token`` (an API bearer token)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from stream.cli.common import settings_from
from stream.settings import load_rules


def cmd_extract(args: argparse.Namespace) -> int:
    from stream.serve.extract import ExtractError, extract
    from stream.tools.replay import append_audit

    try:
        data = extract(args.state_dir, args.customer, load_rules())
    except ExtractError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    append_audit(
        args.state_dir, args.requested_by, "read_extract", args.customer, args.purpose, "ok", {}
    )
    print(json.dumps(data, indent=2, ensure_ascii=False))
    return 0


def cmd_bonus(args: argparse.Namespace) -> int:
    from stream.engine.state import RocksState
    from topologies import household_bonus
    from topologies.queries.household_bonus import household_bonus_month

    stage_dir = Path(args.state_dir) / household_bonus.STAGE
    if not stage_dir.is_dir():
        print(
            f"error: {args.state_dir} has no Bonus ledger state (run `replay` first)",
            file=sys.stderr,
        )
        return 2
    from stream.tools.replay import append_audit

    state = RocksState(stage_dir, read_only=True)
    try:
        answer = household_bonus_month(state, args.household, args.month)
    finally:
        state.close()
    # The audit record first, the answer after it (as extract, and the API: no answer
    # leaves without its record).
    append_audit(
        args.state_dir,
        args.requested_by,
        "read_household_bonus",
        None,
        args.purpose,
        "ok",
        {"month": args.month},
    )
    print(json.dumps(answer, indent=2))
    return 0


def cmd_recall(args: argparse.Namespace) -> int:
    from stream.serve.recalls import recall_request

    try:
        request = recall_request(
            args.gtin, args.from_date, args.to_date, args.reason or "", args.requested_by
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.state_dir:
        from stream.tools.replay import recall_on_state

        if not (Path(args.state_dir) / "personal_routing").is_dir():
            print(f"error: {args.state_dir} has no replay state", file=sys.stderr)
            return 2
        found = recall_on_state(args.state_dir, load_rules(), request)
        for notification in found:
            print(json.dumps(notification, ensure_ascii=False))
        print(
            f"recall {request['recall_id']}: {len(found)} customer(s) to notify; audit records "
            f"appended to {Path(args.state_dir) / 'audit.log.jsonl'}",
            file=sys.stderr,
        )
        return 0
    from stream.simulator.pos import send_recall_request

    settings = settings_from(args)
    send_recall_request(settings, request)
    print(json.dumps({"recall_id": request["recall_id"], "partitions": settings.partitions}))
    print(
        "sent to every partition of recall.requests; the workers write the notifications to "
        "recall.notifications (key <recall_id>/<customer_id>) and the audit trail to audit.log",
        file=sys.stderr,
    )
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    from stream.serve import auth

    settings = settings_from(args)
    try:
        print(
            auth.issue(
                settings.api_jwt_secret,
                args.sub,
                role=args.role,
                ttl_s=args.ttl,
            )
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
