"""Test harness for the monitoring stack: a real Prometheus server, dashboard and rule files.

- :func:`require_binary` finds ``prometheus`` / ``promtool`` / ``docker-compose``, installing
  the Debian package when it is missing and we are root (``make test`` installs them first,
  through ``make apt``); otherwise the test fails with the command to run, or skips outside
  CI (``PURCHASE_STREAM_REQUIRE_BROKER=1`` / ``CI=1`` make it a failure, as for the broker).
- :class:`PrometheusServer` runs ``prometheus`` on a free loopback port with a temporary
  TSDB and a generated config that scrapes the given targets every second and loads the
  project's alert rules.
- :func:`panel_queries` / :func:`rule_expressions` read every query of the Grafana dashboards
  and every alert expression; :func:`as_grafana_would` substitutes Grafana's variables.
- :func:`render_dashboard` plots a dashboard's panels from ``query_range`` (the picture
  of the pipeline overview in docs/architecture.md comes from it).
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from stream.local.reachability import free_port
from tests.integration.conftest import broker_required

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "config" / "grafana" / "dashboards"
ALERT_RULES = ROOT / "config" / "prometheus" / "alerts.yml"
JOB = "purchase-stream"


def require_binary(name: str, package: str) -> str:
    """Path of ``name``; installs Debian's ``package`` when missing (root only)."""
    found = shutil.which(name)
    if found:
        return found
    if shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (
            ["apt-get", "update", "-qq"],
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", package],
        ):
            subprocess.run(cmd, env=env, check=False, capture_output=True, timeout=600)
        found = shutil.which(name)
        if found:
            return found
    reason = (
        f"`{name}` is not installed and could not be installed here: run `make apt` as root, "
        f"or `apt-get install --no-install-recommends {package}`"
    )
    if broker_required():
        pytest.fail(reason, pytrace=False)
    pytest.skip(reason)


def _get_json(url: str, timeout: float = 10) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - loopback
        return json.loads(resp.read())


class PrometheusServer:
    def __init__(
        self, binary: str, workdir: Path, targets: list[str], rules: Path = ALERT_RULES
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config = workdir / "prometheus.yml"
        # The same shape as config/prometheus/prometheus.yml, on loopback, every second.
        self.config.write_text(
            "global:\n"
            "  scrape_interval: 1s\n"
            "  evaluation_interval: 1s\n"
            "rule_files:\n"
            f"  - {json.dumps(str(rules))}\n"
            "scrape_configs:\n"
            f"  - job_name: {JOB}\n"
            "    metrics_path: /metrics\n"
            "    static_configs:\n"
            f"      - targets: {json.dumps(targets)}\n"
        )
        self.log_path = workdir / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30) -> PrometheusServer:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--storage.tsdb.retention.time=1d",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"prometheus exited:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1):  # noqa: S310
                    return self
            except OSError:
                time.sleep(0.2)
        raise AssertionError(f"prometheus not ready in {timeout}s:\n{self.log_tail()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return "(no log)"

    def query(self, expr: str) -> dict[str, Any]:
        """``/api/v1/query``; returns the whole answer (errors included, never raises on 400)."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        try:
            return dict(_get_json(url))
        except urllib.error.HTTPError as exc:  # 400/422: a bad expression
            return dict(json.loads(exc.read() or b"{}") or {"status": "error"})

    def query_range(self, expr: str, start: float, end: float, step: float) -> dict[str, Any]:
        params = {"query": expr, "start": start, "end": end, "step": step}
        url = f"{self.url}/api/v1/query_range?" + urllib.parse.urlencode(params)
        try:
            return dict(_get_json(url))
        except urllib.error.HTTPError as exc:
            return dict(json.loads(exc.read() or b"{}") or {"status": "error"})

    def rules(self) -> list[dict[str, Any]]:
        data = _get_json(f"{self.url}/api/v1/rules")["data"]
        return [r for g in data["groups"] for r in g["rules"]]


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    unit: str
    expr: str
    legend: str


def panel_queries(directory: Path = DASHBOARDS) -> Iterator[PanelQuery]:
    for path in sorted(directory.glob("*.json")):
        dash = json.loads(path.read_text())
        for panel in dash["panels"]:
            for target in panel.get("targets", []):
                yield PanelQuery(
                    path.name,
                    panel["title"],
                    panel["fieldConfig"]["defaults"].get("unit", ""),
                    target["expr"],
                    target.get("legendFormat", ""),
                )


def rule_expressions(path: Path = ALERT_RULES) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(alert name, expression, the whole rule) for every rule of the file."""
    import yaml

    doc = yaml.safe_load(path.read_text())
    for group in doc["groups"]:
        for rule in group["rules"]:
            yield rule.get("alert") or rule.get("record"), rule["expr"], rule


def as_grafana_would(expr: str, rate_interval: str = "1m") -> str:
    """Grafana's own variables, substituted as Grafana does before sending a query."""
    return expr.replace("$__rate_interval", rate_interval).replace("$__interval", "15s")


def render_dashboard(
    prom: PrometheusServer,
    dashboard: Path,
    start: float,
    end: float,
    png: Path,
    columns: int = 4,
) -> None:
    """A picture of ``dashboard``: each panel's queries over [start, end], as Grafana lays
    them out (titles, units in the axis label, stat panels as their last value)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dash = json.loads(dashboard.read_text())
    panels = dash["panels"]
    rows = math.ceil(len(panels) / columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 4.6, rows * 2.7))
    step = max(1.0, (end - start) / 240)
    for ax, panel in zip(axes.flat, panels, strict=False):
        unit = panel["fieldConfig"]["defaults"].get("unit", "")
        ax.set_title(panel["title"], fontsize=9, loc="left")
        series: list[tuple[str, list[float], list[float]]] = []
        for target in panel["targets"]:
            answer = prom.query_range(as_grafana_would(target["expr"]), start, end, step)
            for s in answer.get("data", {}).get("result", []):
                legend = target.get("legendFormat") or ""
                for k, v in s["metric"].items():
                    legend = legend.replace("{{" + k + "}}", v)
                xs = [(float(t) - start) / 60 for t, _ in s["values"]]
                ys = [float(v) for _, v in s["values"]]
                series.append((legend, xs, ys))
        if panel["type"] == "stat":
            last = [ys[-1] for _, _, ys in series if ys and not math.isnan(ys[-1])]
            value = sum(last) if last else float("nan")
            ax.axis("off")
            ax.text(0.5, 0.45, _fmt(value, unit), ha="center", va="center", fontsize=22)
            continue
        for legend, xs, ys in series[:10]:
            ax.plot(xs, ys, linewidth=1.1, label=legend[:38])
        ax.set_ylabel(_unit_label(unit), fontsize=7)
        ax.set_xlabel("minutes", fontsize=7)
        ax.tick_params(labelsize=7)
        if series:
            ax.legend(fontsize=6, loc="upper left", frameon=False)
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle(
        f"{dash['title']} — a worker under the POS simulator's load, scraped by Prometheus "
        "(every panel's own query)",
        fontsize=12,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=72)
    plt.close(fig)


def _unit_label(unit: str) -> str:
    if unit.startswith("suffix:"):
        return unit.split(":", 1)[1].strip()
    return {"s": "seconds", "bytes": "bytes", "percentunit": "fraction", "ms": "ms"}.get(unit, unit)


def _fmt(value: float, unit: str) -> str:
    if math.isnan(value):
        return "–"
    if unit == "s":
        return f"{value:.2f} s"
    if unit.startswith("suffix:"):
        return f"{value:,.1f} {unit.split(':', 1)[1].strip()}"
    return f"{value:,.0f}"
