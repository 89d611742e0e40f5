"""The scaling result as tables (terminal and Markdown), and where each provider saturates.

Everything is rendered from the JSON result, so the published report cannot drift from
it; the saturation lines are computed from the figures, not written by hand.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

from ._report import Table, _aligned, _markdown_table

__all__ = [
    "knee",
    "render_scaling_markdown",
    "render_scaling_text",
    "saturation_line",
    "scaling_tables",
]

#: The measurements, in the order of the tables (and the keys of their plots).
MEASUREMENTS = ("workers", "processes", "latency", "batch")
#: The batch-cost operations, as named in the JSON and in the tables.
OPERATIONS = (
    ("send_batch", "send_batch"),
    ("receive_ack", "receive + ack each"),
    ("receive_ack_claims", "receive + ack_claims"),
)
#: A step that adds less than this fraction of throughput counts as no longer growing.
GROWTH = 0.10
#: A load level whose send or handling rate is below this share of the offered rate fell
#: behind.
KEPT_UP = 0.95

NOISE = (
    "Measured on a shared 2-vCPU virtual machine on which other work ran at the same time: "
    "absolute figures move by up to 2 to 3x between runs, and the broker or database shares "
    "the two cores with the client (and with every consumer process). Read the shapes "
    "(where a curve flattens, how fast latency climbs), not single numbers."
)


def _num(value: float | None, digits: int = 0) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _pct(fraction: float) -> str:
    return f"{fraction * 100:+.0f}%"


_PLURAL = {"worker": "workers", "process": "processes"}


def count(n: int, unit: str) -> str:
    """``1 worker``, ``4 workers`` (``unit`` is the singular)."""
    return f"{n} {unit}" if n == 1 else f"{n} {_PLURAL.get(unit, unit + 's')}"


def _times(before: float, after: float) -> str:
    if abs(after / before - 1) < GROWTH:
        return "about the same"
    if after < before:
        return f"{before / after:.1f}x lower"
    return f"{after / before:.1f}x higher"


def knee(points: Sequence[tuple[int, float | None]]) -> str:
    """Where throughput stops growing by :data:`GROWTH` per step, or that it never does."""
    done = [(x, y) for x, y in points if y is not None and y > 0]
    if not done:
        return "no data"
    for (x0, y0), (x1, y1) in itertools.pairwise(done):
        if y1 < y0 * (1 + GROWTH):
            where = "best at" if y1 < y0 * (1 - GROWTH) else "flat from"
            return f"{where} {x0} ({y0:,.0f} msg/s; {x1}: {_pct(y1 / y0 - 1)})"
    (x0, y0), (x1, y1) = done[0], done[-1]
    if x1 == x0:
        return f"{y0:,.0f} msg/s at {x0} (one setting measured)"
    return f"still growing at {x1} ({y1:,.0f} msg/s, {y1 / y0:.1f}x {x0})"


def _behind(point: Mapping[str, Any]) -> bool:
    """The senders or the consumer did not keep up the offered rate.

    Judged by rates, not by late sends: on a busy machine a timer firing a few
    milliseconds late is jitter, while a rate short of the target is falling behind.
    """
    offered = point["offered_msg_s"]
    rates = (point.get("sent_msg_s"), point.get("handled_msg_s"))
    return any(rate is None or rate < KEPT_UP * offered for rate in rates)


def _latency_phrase(latency: Mapping[str, Any]) -> str:
    points = [p for p in latency["points"] if p.get("p99_ms") is not None]
    if not points:
        return "no data"
    first, last = points[0], points[-1]
    text = (
        f"p99 {first['p99_ms']:.1f} → {last['p99_ms']:.1f} ms from {first['load']:.0%} to "
        f"{last['load']:.0%} of {latency['capacity_msg_s']:,.0f} msg/s"
    )
    behind = [p for p in points if _behind(p)]
    if behind:
        text += f", falls behind at {behind[0]['load']:.0%}"
    return text


def _batch_phrase(rows: Sequence[Mapping[str, Any]]) -> str:
    parts = []
    sizes: list[int] = []
    for operation, label in OPERATIONS:
        cpu = [
            (r["batch"], r["median_cpu_us_per_msg"])
            for r in rows
            if r["operation"] == operation and (r["median_cpu_us_per_msg"] or 0) > 0
        ]
        if len(cpu) < 2:
            continue
        (b0, c0), (b1, c1) = cpu[0], cpu[-1]
        parts.append(f"{label} {_times(c0, c1)}")
        sizes = [b0, b1]
    if not parts:
        return "no data"
    return f"{sizes[0]} → {sizes[1]}, CPU/msg " + ", ".join(parts)


def handler_label(ms: float) -> str:
    """How the handler of a worker series spends its time."""
    return f"awaits {ms:g} ms" if ms > 0 else "does nothing"


def _series_label(handler_ms: float) -> str:
    return f"{handler_ms:g} ms handler" if handler_ms > 0 else "idle handler"


def saturation_line(result: Mapping[str, Any]) -> str:
    """One line per provider: where its throughput flattens, how latency grows, batching."""
    workers = ", ".join(
        f"{_series_label(series['handler_ms'])} "
        + knee([(p["workers"], p["median_msg_s"]) for p in series["points"]])
        for series in result["workers"]
    )
    processes = result["processes"]
    if processes["applicable"]:
        across = knee([(p["processes"], p["median_msg_s"]) for p in processes["points"]])
    else:
        across = "not applicable"
    return (
        f"**{result['provider']}** ({result['mode']}): workers: {workers}; "
        f"processes: {across}; latency: {_latency_phrase(result['latency'])}; "
        f"batch {_batch_phrase(result['batch_cost'])}."
    )


def scaling_tables(report: Mapping[str, Any]) -> list[Table]:
    """(title, header, rows): one table per measurement, a row per provider."""
    settings = report["settings"]
    results = list(report["providers"].values())
    rounds = settings["rounds"]
    out: list[Table] = []

    header = ["provider", "mode", "handler"]
    header += [f"{count(w, 'worker')} msg/s" for w in settings["workers"]]
    header += [f"{count(w, 'worker')} CPU µs/msg" for w in settings["workers"]]
    rows = []
    for result in results:
        for series in result["workers"]:
            by = {p["workers"]: p for p in series["points"]}
            row = [result["provider"], result["mode"], handler_label(series["handler_ms"])]
            row += [_num(by.get(w, {}).get("median_msg_s")) for w in settings["workers"]]
            row += [_num(by.get(w, {}).get("median_cpu_us_per_msg")) for w in settings["workers"]]
            rows.append(row)
    out.append(
        (
            f"Event-system throughput by workers, one process (drain {settings['messages']} "
            f"messages; median of {rounds} rounds)",
            header,
            rows,
        )
    )

    header = ["provider", *(f"{count(p, 'process')} msg/s" for p in settings["processes"])]
    header += [f"{count(p, 'process')} CPU µs/msg" for p in settings["processes"]]
    rows = []
    for result in results:
        processes = result["processes"]
        if not processes["applicable"]:
            rows.append([result["provider"], *(["not applicable"] * (len(header) - 1))])
            continue
        by = {p["processes"]: p for p in processes["points"]}
        row = [result["provider"]]
        row += [_num(by.get(p, {}).get("median_msg_s")) for p in settings["processes"]]
        row += [_num(by.get(p, {}).get("median_cpu_us_per_msg")) for p in settings["processes"]]
        rows.append(row)
    out.append(
        (
            f"Event-system throughput by consumer processes ({settings['consumer_workers']} "
            f"workers each; CPU: the consumer processes'; median of {rounds} rounds)",
            header,
            rows,
        )
    )

    header = ["provider", "load", "offered msg/s", "sent msg/s", "handled msg/s"]
    header += ["sends > 2 ms late"]
    header += ["p50 ms", "p95 ms", "p99 ms", "max ms", "samples", "CPU µs/msg"]
    rows = []
    for result in results:
        latency = result["latency"]
        for p in latency["points"]:
            rows.append(
                [
                    result["provider"],
                    f"{p['load']:.0%} of {latency['capacity_msg_s']:,.0f}",
                    _num(p["offered_msg_s"]),
                    _num(p.get("sent_msg_s")),
                    _num(p.get("handled_msg_s")),
                    f"{p['late_sends']}",
                    _num(p.get("p50_ms"), 2),
                    _num(p.get("p95_ms"), 2),
                    _num(p.get("p99_ms"), 2),
                    _num(p.get("max_ms"), 2),
                    f"{p.get('samples', 0):.0f}",
                    _num(p.get("cpu_us_per_msg")),
                ]
            )
    out.append(
        (
            f"Push latency, send → handler, at a paced share of capacity ({settings['senders']} "
            f"senders, {settings['consumer_workers']} workers; capacity: median of {rounds} "
            "flat-out runs)",
            header,
            rows,
        )
    )

    batches = settings["batches"]
    header = ["provider", "operation", *(f"batch {b} CPU µs/msg" for b in batches)]
    header += [f"batch {b} wall µs/msg" for b in batches]
    rows = []
    for result in results:
        for operation, label in OPERATIONS:
            by = {r["batch"]: r for r in result["batch_cost"] if r["operation"] == operation}
            row = [result["provider"], label]
            row += [_num(by.get(b, {}).get("median_cpu_us_per_msg"), 1) for b in batches]
            row += [_num(by.get(b, {}).get("median_wall_us_per_msg"), 1) for b in batches]
            rows.append(row)
    out.append(
        (
            f"Cost per message by batch size ({settings['batch_messages']} messages per run; "
            f"median of {rounds} rounds)",
            header,
            rows,
        )
    )
    return out


def render_scaling_text(report: Mapping[str, Any]) -> str:
    """Aligned tables and the saturation lines, for the terminal."""
    lines: list[str] = []
    for title, header, rows in scaling_tables(report):
        lines += ["", title, *_aligned(header, rows)]
    lines += ["", "Where each provider saturates"]
    lines += [f"- {saturation_line(r).replace('**', '')}" for r in report["providers"].values()]
    return "\n".join(lines) + "\n"


def _sizes(settings: Mapping[str, Any]) -> str:
    return (
        f"{settings['messages']} messages of {settings['payload_bytes']} bytes per throughput "
        f"and capacity run; {settings['rounds']} rounds, settings interleaved within each; "
        f"latency: {settings['latency_seconds']:g} s of paced sending per load level "
        f"({settings['latency_min_samples']} to {settings['latency_max_samples']} messages, one "
        f"run each); batch cost: {settings['batch_messages']} messages per run; consumers claim "
        f"{settings['consumer_batch']} at a time."
    )


def _entries(result: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every row of a provider's result that has per-round rates."""
    rows: list[Mapping[str, Any]] = [p for series in result["workers"] for p in series["points"]]
    if result["processes"]["applicable"]:
        rows += result["processes"]["points"]
    return rows + list(result["batch_cost"])


def round_spread(report: Mapping[str, Any]) -> str | None:
    """How far the rounds of one setting differed in this run (max / min rate), or None."""
    spreads = sorted(
        max(rates) / min(rates) - 1
        for result in report["providers"].values()
        for entry in _entries(result)
        if len(rates := [r for r in entry["rounds_msg_s"] if r]) > 1
    )
    if not spreads:
        return None
    middle = spreads[len(spreads) // 2]
    return (
        f"In this run the rounds of one setting differed by {middle:.0%} (median, fastest "
        f"over slowest) and by up to {spreads[-1]:.0%}."
    )


def render_scaling_markdown(
    report: Mapping[str, Any], *, plots: Mapping[str, str], plot_note: str | None = None
) -> str:
    """The Markdown report: how it was run, tables, plots, and where providers saturate."""
    settings = report["settings"]
    machine = report["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items() if v)
    lines = [
        "# mqcontract bench scaling",
        "",
        f"Reproduce: `{report['command']}` (took {report['duration_s']:.0f} s; "
        f"started {report['started_at']}).",
        "",
        f"- **Noise.** {NOISE} {round_spread(report) or ''}".rstrip(),
        f"- Sizes: {_sizes(settings)}",
        f"- Machine: {machine['cpu_count']} CPUs ({machine['cpu_model']}), "
        f"{machine['platform']}, {machine['python']}; load average at start "
        f"{machine['load_average_at_start']}, at end {machine['load_average_1_5_15']}.",
        f"- Packages: {packages}.",
        "- Throughput drains a backlog sent beforehand; each consumer runs in the provider's "
        "best deployment mode (EventDrivenOnly where push alone suffices, else Hybrid). "
        "Workers are measured with a handler that does nothing (the client's CPU and the "
        "backend set the limit) and with one that awaits (as an I/O-bound handler does: "
        "what workers are for). Consumer processes are separate interpreters (spawned), "
        "each opening its own service, with a handler that does nothing; the timed span "
        "starts when all are connected. CPU per message is this process's (for processes: "
        "the consumer processes' together), not the backend's.",
        f"- Capacity: {settings['senders']} senders, each waiting for its send to complete "
        "(commit, publisher confirm) before the next, send one message per call as fast as "
        "they can while the consumer handles them. Latency runs then pace the sends on a "
        "fixed schedule (a late send does not move the next one) at a share of that "
        'capacity. Latency is from the start of `send_message` to the handler; "sends > 2 ms '
        'late" started that long after their due time (timer jitter on a busy machine, or '
        "all senders busy). Sends and handling share one process, and a burst drains cheaper "
        "than a steady trickle (claims are batched, the loop wakes less often), so a provider "
        "can fall behind below 100% of its flat-out capacity: the saturation line says from "
        f"which load its send or handling rate fell under {KEPT_UP:.0%} of the offered rate. "
        "For the in-memory provider the load generator's own timers cost about as much as "
        "the provider.",
        "",
        "## Where each provider saturates",
        "",
        "Derived from the tables below (a step adding under "
        f"{GROWTH:.0%} throughput counts as flat).",
        "",
    ]
    lines += [f"- {saturation_line(r)}" for r in report["providers"].values()]
    errors = [
        f"- {name}: {error}"
        for name, result in report["providers"].items()
        for error in result["errors"]
    ]
    if errors:
        lines += ["", "## Failed measurements", "", *errors]
    for (title, header, rows), key in zip(scaling_tables(report), MEASUREMENTS, strict=True):
        lines += ["", f"## {title}", "", *_markdown_table(header, rows)]
        if key in plots:
            lines += ["", f"![{title}]({plots[key]})"]
    if plot_note:
        lines += ["", plot_note]
    return "\n".join(lines) + "\n"
