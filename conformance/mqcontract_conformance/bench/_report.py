"""The results as tables: aligned text for the terminal, Markdown for ``reports/bench``.

Both are rendered from the JSON result, so the committed report cannot drift from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

__all__ = ["headline_table", "render_markdown", "render_text", "tables"]

Table = tuple[str, list[str], list[list[str]]]


def _rate(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _times(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}x"


def _us(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f}"


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _labels(result: dict[str, Any]) -> list[str]:
    return list(result["sides"])


def tables(result: dict[str, Any]) -> list[Table]:
    """(title, header, rows) for one provider's result."""
    labels = _labels(result)
    others = [label for label in labels if label != "provider"]
    out: list[Table] = []
    header = ["workload", *(f"{label} msg/s" for label in labels)]
    header += [f"provider/{label}" for label in others]
    rows = []
    for entry in result["throughput"]:
        row = [entry["title"]]
        row += [_rate(entry["sides"].get(label, {}).get("median_msg_s")) for label in labels]
        row += [
            _times(entry["ratios"].get(f"provider/{label}", {}).get("median")) for label in others
        ]
        rows.append(row)
    if rows:
        out.append(
            ("throughput (median of rounds; ratio: median of per-round ratios)", header, rows)
        )

    header = ["workload", *(f"{label} µs" for label in labels)]
    header += [f"provider - {label} µs" for label in others]
    rows = []
    for entry in result["throughput"]:
        cpu = {
            label: entry["sides"].get(label, {}).get("median_cpu_us_per_msg") for label in labels
        }
        row = [entry["title"], *(_us(cpu[label]) for label in labels)]
        row += [_us(_minus(cpu.get("provider"), cpu[label])) for label in others]
        rows.append(row)
    if rows:
        out.append(("client CPU per message in this process (median of rounds)", header, rows))

    if result["latency"]:
        header = ["mode", "side", "p50 ms", "p95 ms", "p99 ms", "max ms", "samples"]
        rows = []
        for entry in result["latency"]:
            for label, summary in entry["sides"].items():
                rows.append(
                    [
                        entry["mode"],
                        label,
                        _ms(summary.get("p50_ms")),
                        _ms(summary.get("p95_ms")),
                        _ms(summary.get("p99_ms")),
                        _ms(summary.get("max_ms")),
                        f"{summary.get('samples', 0):.0f}",
                    ]
                )
        out.append(("push latency, send → handler", header, rows))

    if result["recovery"]:
        header = ["fault", "mode", "poll interval s", "median s", "max s", "samples"]
        rows = []
        for entry in result["recovery"]:
            if "skipped" in entry:
                rows.append([entry["fault"], entry["mode"], "", "skipped", "", entry["skipped"]])
                continue
            samples = ", ".join("—" if s is None else f"{s:.3f}" for s in entry["samples_s"])
            rows.append(
                [
                    entry["fault"],
                    entry["mode"],
                    f"{entry['poll_interval_s']:g}",
                    "—" if entry["median_s"] is None else f"{entry['median_s']:.3f}",
                    "—" if entry["max_s"] is None else f"{entry['max_s']:.3f}",
                    samples,
                ]
            )
        out.append(("fallback recovery: first delivery after the fault", header, rows))
    return out


def headline_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]] | None:
    """Ratios (provider / each other side) by workload and provider; None without any."""
    columns: list[tuple[str, str]] = []
    titles: dict[str, str] = {}
    cells: dict[tuple[str, str, str], float | None] = {}
    for name, result in report["providers"].items():
        for entry in result["throughput"]:
            titles.setdefault(entry["workload"], entry["title"])
            for key, value in entry["ratios"].items():
                if (name, key) not in columns:
                    columns.append((name, key))
                cells[(entry["workload"], name, key)] = value["median"]
    if not columns:
        return None
    header = ["workload", *(f"{name} {key}" for name, key in columns)]
    rows = [
        [title, *(_times(cells.get((workload, name, key))) for name, key in columns)]
        for workload, title in titles.items()
        if any((workload, name, key) in cells for name, key in columns)
    ]
    return header, rows


def _aligned(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows, strict=False)]

    def line(cells: Sequence[str]) -> str:
        first, *rest = cells
        parts = [first.ljust(widths[0])]
        parts += [c.rjust(w) for c, w in zip(rest, widths[1:], strict=False)]
        return "  ".join(parts).rstrip()

    return [line(header), "  ".join("-" * w for w in widths), *(line(r) for r in rows)]


def render_text(report: dict[str, Any]) -> str:
    """Aligned tables for every provider, for the terminal."""
    lines: list[str] = []
    for name, result in report["providers"].items():
        lines.append(f"\n== {name}")
        for title, header, rows in tables(result):
            lines.append(f"\n{title}")
            lines += _aligned(header, rows)
    headline = headline_table(report)
    if headline is not None:
        lines += ["\n== headline: provider / raw driver throughput (median of per-round ratios)"]
        lines += _aligned(*headline)
    return "\n".join(lines) + "\n"


def _markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    aligns = ["---"] + ["---:"] * (len(header) - 1)
    return [
        "| " + " | ".join(header) + " |",
        "| " + " | ".join(aligns) + " |",
        *("| " + " | ".join(r) + " |" for r in rows),
    ]


def render_markdown(report: dict[str, Any], *, command: str) -> str:
    """The Markdown report: settings, machine, then each provider's tables."""
    settings = report["settings"]
    machine = report["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v)
    lines = [
        "# mqcontract bench",
        "",
        f"Reproduce: `{command}`",
        "",
        f"- {settings['messages']} messages of {settings['payload_bytes']} bytes per timed run, "
        f"batches of {settings['batch']}, {settings['workers']} consumer workers, "
        f"rounds: {settings['rounds']} (sides interleaved, order rotating per round).",
        f"- Machine: {machine['cpu_count']} CPUs ({machine['cpu_model']}), {machine['platform']}, "
        f"{machine['python']}; load average at start {machine['load_average_at_start']}, "
        f"at end {machine['load_average_1_5_15']}.",
        f"- Packages: {packages}.",
    ]
    headline = headline_table(report)
    if headline is not None:
        header, rows = headline
        lines += [
            "",
            "## Headline: provider / raw driver throughput",
            "",
            "Median of per-round ratios; above 1 the provider is faster. "
            "PGMQ also against the `pgmq` client.",
            "",
            *_markdown_table(header, rows),
        ]
    for name, result in report["providers"].items():
        backend = ", ".join(f"{k} {v}" for k, v in result["backend"].items() if k != "database")
        lines += ["", f"## {name}", ""]
        if backend:
            lines.append(f"Backend: {backend}.")
            lines.append("")
        for label, description in result["sides"].items():
            lines.append(f"- **{label}**: {description}")
        for title, header, rows in tables(result):
            lines += ["", f"### {title}", "", *_markdown_table(header, rows)]
    return "\n".join(lines) + "\n"
