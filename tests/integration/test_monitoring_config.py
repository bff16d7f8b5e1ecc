"""The monitoring configuration passes the real tools: promtool and docker-compose.

- ``promtool check rules`` on config/prometheus/alerts.yml;
- ``promtool check config`` on config/prometheus/prometheus.yml (rule path pointed at the
  repository's file instead of the container's);
- every alert's ``runbook_url``, rendered by promtool with prometheus.yml's external labels,
  is an absolute URL whose anchor is a section of docs/runbook.md;
- ``promtool check metrics`` on the project's own registry (Faust's sensor is left out: its
  ``*_ms`` names are Faust's);
- ``docker-compose config -q`` on docker-compose.yml, and the files it mounts exist.

These need Debian packages (``make apt`` installs them), hence the integration folder.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import yaml
from prometheus_client import CollectorRegistry, generate_latest

from stream.engine.metrics import Metrics
from stream.engine.observability import add_process_metrics
from tests.integration.prometheus_harness import ALERT_RULES, ROOT, require_binary
from topologies.records import StepResult

# No lint is waived: every name passes `promtool check metrics`.
ALLOWED_LINT: set[str] = set()


def _run(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, **kw)  # type: ignore[call-overload,no-any-return]


def test_promtool_check_rules() -> None:
    promtool = require_binary("promtool", "prometheus")
    out = _run([promtool, "check", "rules", str(ALERT_RULES)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_unit_tests_of_the_alert_rules(tmp_path: Path) -> None:
    """tests/integration/promtool/alerts_test.yml: when the stall and lag alerts fire."""
    promtool = require_binary("promtool", "prometheus")
    source = Path(__file__).parent / "promtool" / "alerts_test.yml"
    path = tmp_path / source.name
    path.write_text(source.read_text().replace("  - RULES\n", f"  - {ALERT_RULES}\n"))
    out = _run([promtool, "test", "rules", str(path)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_check_config(tmp_path: Path) -> None:
    promtool = require_binary("promtool", "prometheus")
    config = yaml.safe_load((ROOT / "config" / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/alerts.yml"]
    config["rule_files"] = [str(ALERT_RULES)]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    out = _run([promtool, "check", "config", str(path)])
    assert out.returncode == 0, out.stdout + out.stderr


def _runbook_anchors() -> set[str]:
    """The anchors a Markdown renderer gives docs/runbook.md's headings."""
    text = (ROOT / "docs" / "runbook.md").read_text()
    return {
        re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", text, flags=re.M)
    }


def test_every_runbook_url_renders_absolute_to_a_runbook_section(tmp_path: Path) -> None:
    """Each alert fires once (its expression replaced by ``vector(1)``, its annotations but
    ``runbook_url`` dropped) under the external labels of prometheus.yml, and promtool checks
    the annotation its template renders against the URL expected: the base, then the
    alert's anchor. The base must be absolute and every anchor a section of the runbook."""
    promtool = require_binary("promtool", "prometheus")
    config = yaml.safe_load((ROOT / "config" / "prometheus" / "prometheus.yml").read_text())
    external = config["global"]["external_labels"]
    base = external["runbook_base"]
    parts = urlsplit(base)
    assert parts.scheme in ("http", "https") and parts.netloc and not parts.fragment, base
    anchors = _runbook_anchors()
    rules = [r for g in yaml.safe_load(ALERT_RULES.read_text())["groups"] for r in g["rules"]]
    assert rules
    fired, expected = [], []
    for rule in rules:
        name = rule["alert"]
        assert name.lower() in anchors, f"docs/runbook.md has no section for {name}"
        fired.append(
            {
                "alert": name,
                "expr": "vector(1)",
                "labels": rule.get("labels", {}),
                "annotations": {"runbook_url": rule["annotations"]["runbook_url"]},
            }
        )
        expected.append(
            {
                "eval_time": "1m",
                "alertname": name,
                "exp_alerts": [
                    {
                        "exp_labels": rule.get("labels", {}),
                        "exp_annotations": {"runbook_url": f"{base}#{name.lower()}"},
                    }
                ],
            }
        )
    rules_path = tmp_path / "fired.yml"
    rules_path.write_text(yaml.safe_dump({"groups": [{"name": "fired", "rules": fired}]}))
    test_path = tmp_path / "fired_test.yml"
    test_path.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(rules_path)],
                "evaluation_interval": "15s",
                "tests": [
                    {
                        "interval": "15s",
                        "external_labels": external,
                        "input_series": [],
                        "alert_rule_test": expected,
                    }
                ],
            }
        )
    )
    out = _run([promtool, "test", "rules", str(test_path)])
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS" in out.stdout


def test_promtool_check_metrics_on_our_registry() -> None:
    promtool = require_binary("promtool", "prometheus")
    registry = CollectorRegistry()
    m = Metrics(registry)
    add_process_metrics(registry)
    # Every family with samples, the label-less ones and the collected gauges included.
    result = StepResult()
    result.events.update({"counted": 1, "counters_updated": 1, "duplicate": 1})
    m.observe("household_bonus", result)
    m.child(m.api_requests, "/v1/me/counters/{month}", "200").inc()
    m.child(m.api_latency, "/v1/me/counters/{month}").observe(0.01)
    m.consumer_lag.labels("pos.receipts", "0").set(3)
    m.assigned_partitions.labels("pos.receipts").set(4)
    m.table_keys.labels("card_join-store").set(10)
    m.table_disk_bytes.labels("card_join-store").set(4096)
    m.child(m.bonus_dedupe, "0").set(5)
    m.receipt_watermark(0, 1_000)
    m.refresh_event_time_lag()
    text = generate_latest(registry).decode()
    out = _run([promtool, "check", "metrics"], input=text)
    problems = {line.strip() for line in (out.stdout + out.stderr).splitlines() if line.strip()}
    assert problems <= ALLOWED_LINT, "\n".join(sorted(problems - ALLOWED_LINT))


def test_docker_compose_config_validates() -> None:
    compose = require_binary("docker-compose", "docker-compose")
    out = _run([compose, "-f", str(ROOT / "docker-compose.yml"), "config", "-q"], cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
    full = _run([compose, "-f", str(ROOT / "docker-compose.yml"), "config"], cwd=ROOT)
    doc = yaml.safe_load(full.stdout)
    services = doc["services"]
    assert {
        "kafka",
        "schema-registry",
        "topics",
        "worker-1",
        "worker-2",
        "pos",
        "prometheus",
        "grafana",
    } <= set(services)
    # Every file or folder bind-mounted from the repository exists.
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            kind = volume.get("type") if isinstance(volume, dict) else None
            if kind == "bind" or source.startswith(("/", ".")):
                assert Path(source).exists(), f"{name} mounts {source}, which does not exist"
    # Prometheus scrapes both workers on the ports they listen on.
    scrape = yaml.safe_load((ROOT / "config" / "prometheus" / "prometheus.yml").read_text())
    targets = scrape["scrape_configs"][0]["static_configs"][0]["targets"]
    for worker in ("worker-1", "worker-2"):
        port = services[worker]["environment"]["PURCHASE_STREAM_WEB_PORT"]
        assert f"{worker}:{port}" in targets
