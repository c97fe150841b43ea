"""Draw bench/decode.py's results: grok-edge against llama.cpp per preset, as a PNG.

    python bench/plot.py [RESULTS.json] [-o OUT.png]

RESULTS (default bench/results/decode.json) is what ``bench/decode.py --json`` writes: one entry per
run in ``runs``, each with per-preset figures. The left panel shows grok-edge's speed over llama.cpp's
(prompt and decode; bars at the median over the runs, whiskers from the slowest to the fastest run,
a line at 1 for llama.cpp), the right one the share of the machine's read bandwidth grok-edge's decoding
reaches, with the weight bytes a decoded token reads written above each bar. Needs matplotlib; without
it the script says so and writes nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DEFAULT_RESULTS = HERE / "results" / "decode.json"
DEFAULT_OUTPUT = HERE.parent / "docs" / "decode.png"


def _number(value: Any, where: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{where}: expected a number or null, got {value!r}")
    return float(value)


def load(path: Path) -> dict[str, Any]:
    """The results file, checked for the fields the plot reads (ValueError naming the file and key)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: cannot read results: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("runs"), list) or not data["runs"]:
        raise ValueError(f"{path}: 'runs' must be a non-empty list")
    for i, run in enumerate(data["runs"]):
        presets = run.get("presets") if isinstance(run, dict) else None
        if not isinstance(presets, dict) or not presets:
            raise ValueError(f"{path}: runs[{i}].presets must be a non-empty object")
        for name, fig in presets.items():
            where = f"{path}: runs[{i}].presets.{name}"
            if not isinstance(fig, dict):
                raise ValueError(f"{where}: expected an object")
            for key in ("ratio_prompt", "ratio_decode", "decode_of_bandwidth", "bytes_per_token"):
                _number(fig.get(key), f"{where}.{key}")
    return data


def series(data: dict[str, Any], key: str) -> dict[str, list[float]]:
    """Per preset (in the order of their first appearance), the values of `key` over the runs."""
    out: dict[str, list[float]] = {}
    for run in data["runs"]:
        for name, fig in run["presets"].items():
            value = _number(fig.get(key), key)
            out.setdefault(name, [])
            if value is not None:
                out[name].append(value)
    return out


def _bars(ax: Any, x: list[float], values: list[list[float]], width: float, label: str, color: str) -> None:
    mid = [statistics.median(v) if v else 0.0 for v in values]
    low = [m - min(v) if v else 0.0 for m, v in zip(mid, values, strict=True)]
    high = [max(v) - m if v else 0.0 for m, v in zip(mid, values, strict=True)]
    ax.bar(x, mid, width, yerr=[low, high], capsize=4, label=label, color=color)


def plot(data: dict[str, Any], output: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    prompt, decode = series(data, "ratio_prompt"), series(data, "ratio_decode")
    share, per_token = series(data, "decode_of_bandwidth"), series(data, "bytes_per_token")
    names = list(prompt)
    labels = [n.upper() for n in names]
    x = [float(i) for i in range(len(names))]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9.0, 3.8), gridspec_kw={"width_ratios": [3, 2]})

    w = 0.36
    _bars(left, [v - w / 2 for v in x], [prompt[n] for n in names], w, "prompt", "#3b6fb6")
    _bars(left, [v + w / 2 for v in x], [decode[n] for n in names], w, "decode", "#e08a2c")
    left.axhline(1.0, color="black", linewidth=1, linestyle="--", label="llama.cpp = 1")
    left.set_xticks(x, labels)
    left.set_ylabel("grok-edge speed / llama.cpp speed")
    left.set_ylim(0, max(2.5, max(max(v) for v in (*prompt.values(), *decode.values()) if v) * 1.15))
    left.legend(loc="upper right", fontsize=8)
    left.set_title("speed relative to llama.cpp", fontsize=10)

    _bars(right, x, [[100 * s for s in share[n]] for n in names], 0.5, "grok-edge decode", "#4a9a5b")
    right.axhline(100, color="black", linewidth=1, linestyle="--")
    right.set_xticks(x, labels)
    right.set_ylabel("% of measured read bandwidth")
    right.set_ylim(0, max(125.0, 115 * max((max(v) for v in share.values() if v), default=1.0)))
    right.set_title("decode against memory bandwidth", fontsize=10)
    for xi, n in zip(x, names, strict=True):
        if per_token.get(n):
            top = max([100.0, *(100 * v for v in share[n])])
            right.text(
                xi,
                top + 6,
                f"{statistics.median(per_token[n]) / 2**20:.0f} MiB/token",
                ha="center",
                fontsize=8,
            )

    runs = len(data["runs"])
    caption = f"{data.get('machine', 'machine not recorded')}, {data.get('date', 'date not recorded')}"
    spread = ": bars the median, whiskers the range" if runs > 1 else ""
    fig.suptitle(f"bench/decode.py: {caption}\n{runs} run{'s' if runs != 1 else ''}{spread}", fontsize=9)
    fig.tight_layout()
    output.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(output, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", nargs="?", type=Path, default=DEFAULT_RESULTS)
    ap.add_argument("-o", "--output", type=Path, default=DEFAULT_OUTPUT)
    args = ap.parse_args(argv)
    try:
        data = load(args.results)
    except ValueError as exc:
        print(f"plot.py: error: {exc}", file=sys.stderr)
        return 1
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print(
            "plot.py: matplotlib is not installed (pip install matplotlib): no plot written", file=sys.stderr
        )
        return 0
    plot(data, args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
