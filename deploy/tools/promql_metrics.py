"""Parse every PromQL expression of the alert rules, the canary analysis and the dashboard.

    promql_metrics.py RULES.yaml... ANALYSIS.yaml... DASHBOARD.json...

Prints a JSON object: each metric name any expression selects, with where it
is used. Exits 1 on an expression that does not parse. Runs in .venv-tools
(promql-parser is not a project dependency).
"""

from __future__ import annotations

import json
import re
import sys
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import promql_parser
import yaml

# Grafana's interval macros, which are not PromQL until Grafana substitutes them.
GRAFANA_MACROS = re.compile(r"\$__(rate_interval|interval|range)\b")
LABEL_VALUES = re.compile(r"^label_values\((.*),\s*\w+\)$", re.DOTALL)


def rule_expressions(path: Path) -> Iterator[tuple[str, str]]:
    """The expressions of PrometheusRule alerts and of Argo Rollouts AnalysisTemplates."""
    for doc in yaml.safe_load_all(path.read_text()):
        if doc and doc.get("kind") == "PrometheusRule":
            for group in doc["spec"]["groups"]:
                for rule in group["rules"]:
                    name = rule.get("alert") or rule.get("record")
                    yield f"{path.name}:{name}", rule["expr"]
        if doc and doc.get("kind") == "AnalysisTemplate":
            for metric in doc["spec"]["metrics"]:
                yield f"{path.name}:{metric['name']}", metric["provider"]["prometheus"]["query"]


def dashboard_expressions(path: Path) -> Iterator[tuple[str, str]]:
    dashboard = json.loads(path.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield f"{path.name}:{panel['title']}/{target['refId']}", target["expr"]
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        if variable.get("type") == "query":
            match = LABEL_VALUES.match(query["query"])
            if match:
                yield f"{path.name}:${variable['name']}", match.group(1)


def metric_names(expr: str) -> set[str]:
    names: set[str] = set()

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(GRAFANA_MACROS.sub("5m", expr)), visit)
    return names


def main(paths: list[str]) -> int:
    used: dict[str, list[str]] = defaultdict(list)
    errors = []
    for path in map(Path, paths):
        source = dashboard_expressions if path.suffix == ".json" else rule_expressions
        for where, expr in source(path):
            try:
                for name in metric_names(expr):
                    used[name].append(where)
            except ValueError as err:
                errors.append(f"{where}: {err}")
    print(json.dumps(dict(sorted(used.items())), indent=2))
    for error in errors:
        print(f"PromQL does not parse: {error}", file=sys.stderr)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
