"""Pictures of a run: PNG curves from its log.jsonl, and TensorBoard event files for those who use it.

    python -m geovlm.plot runs/grpo                 # -> runs/grpo/plots/*.png
    python -m geovlm.plot runs/sft runs/grpo        # several runs, each into its own plots/
    python -m geovlm.plot runs/demo                 # every run below: runs/demo/<date-time>/{sft,grpo}
    python -m geovlm.plot runs/grpo --tensorboard   # also runs/grpo/tensorboard/
                                                    # (then: tensorboard --logdir runs)

Every numeric per-step value in the log is drawn; keys are grouped into panels by name, and panels into
files by topic (a file is written only when it has a panel):

    rewards.png   reward mean ± std, reward/<component>, acc/<task>, format/<task>        (GRPO)
    training.png  loss (+ eval_loss), KL, entropy, clip fraction, grad norm, lr            (GRPO and SFT)
    lengths.png   completion length mean/max, truncated and zero-std fractions, rollouts    (GRPO)
    eval.png      {"step", "eval": {task: {metric: value}}} rows: one panel per task
    timing.png    seconds (*_s, seconds) and tokens/s
    other.png     any other key: grouped by the prefix before "/", else one panel per key

A missing key only skips its panel; null, non-numeric and non-finite values are left out; a torn or
unreadable line is skipped. `plot_run` never raises (a plot is never worth a failed run): it prints why
and returns what it wrote. Drawing uses matplotlib's Agg canvas directly (no pyplot, no display, no
global backend switch), so it is safe inside a training process.

TensorBoard: `TensorBoard(log_dir).write(row)` per log row (tensorboardX: ~90 kB + protobuf, no TensorFlow
and no `tensorboard` package needed to write), or `log_to_tensorboard(run_dir)` to convert a finished log.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

PLOTS_DIR = "plots"
TENSORBOARD_DIR = "tensorboard"
FIGURES = ("rewards", "training", "lengths", "eval", "timing", "other")  # file order

# plain keys with a fixed place: key -> (figure, panel title)
_PLACES: dict[str, tuple[str, str]] = {
    "reward_mean": ("rewards", "reward (mean ± std over completions)"),
    "loss": ("training", "loss"),
    "eval_loss": ("training", "loss"),
    "kl": ("training", "KL to the reference (k3, per token)"),
    "entropy": ("training", "entropy (nats per token)"),
    "clip_frac": ("training", "clip fraction"),
    "grad_norm": ("training", "grad norm"),
    "lr": ("training", "learning rate"),
    "completion_len_mean": ("lengths", "completion length (tokens)"),
    "completion_len_max": ("lengths", "completion length (tokens)"),
    "truncated_frac": ("lengths", "fraction of completions / groups"),
    "zero_std_frac": ("lengths", "fraction of completions / groups"),
    "rollouts": ("lengths", "rollouts per step"),
    "tokens_per_s": ("timing", "tokens / s"),
    "seconds": ("timing", "seconds"),
}
_PREFIXES: dict[str, tuple[str, str]] = {
    "reward": ("rewards", "reward components (mean)"),
    "acc": ("rewards", "accuracy reward per task"),
    "format": ("rewards", "format reward per task"),
}
_BANDS = {"reward_mean": "reward_std"}  # drawn as a ± band around the key, not as a line of its own
_SKIP = {"step", "epoch"}


def place(key: str) -> tuple[str, str]:
    """(figure, panel title) of a flattened log key; unknown keys go to "other", grouped by prefix."""
    if key in _PLACES:
        return _PLACES[key]
    prefix, sep, rest = key.partition("/")
    if sep:
        if prefix == "eval":
            task = rest.rpartition("/")[0] or rest
            return ("eval", task)
        if prefix in _PREFIXES:
            return _PREFIXES[prefix]
        return ("other", prefix)
    if key.endswith("_s"):
        return ("timing", "seconds")
    return ("other", key)


def read_log(path: str | os.PathLike) -> list[dict]:
    """The dict rows of a JSONL log; bad lines (a torn last line, a stray print) are skipped."""
    rows = []
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return rows
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def scalars(row: dict) -> dict[str, float]:
    """The finite numeric values of one log row, flattened: {"eval": {"vqa": {"accuracy": 1}}} ->
    eval/vqa/accuracy.

    Sample counts inside nested dicts ("n") are left out; booleans, strings, nulls and non-finite values
    too."""
    out: dict[str, float] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for k, v in value.items():
                if prefix and str(k) == "n":
                    continue
                walk(f"{prefix}/{k}" if prefix else str(k), v)
        elif (x := _number(value)) is not None and prefix not in _SKIP:
            out[prefix] = x

    walk("", row)
    return out


def series(rows: Iterable[dict]) -> dict[str, tuple[list[float], list[float]]]:
    """key -> (steps, values), sorted by step; a step logged twice (a resumed run) keeps its last value.

    Rows without a usable "step" take their line number."""
    by_key: dict[str, dict[float, float]] = defaultdict(dict)
    for i, row in enumerate(rows):
        step = _number(row.get("step"))
        step = float(i) if step is None else step
        for key, value in scalars(row).items():
            by_key[key][step] = value
    return {k: (sorted(d), [d[s] for s in sorted(d)]) for k, d in by_key.items()}


def panels(data: dict[str, tuple[list[float], list[float]]]) -> dict[str, dict[str, list[str]]]:
    """figure -> panel title -> keys (in a stable order), for the keys present in `data`."""
    out: dict[str, dict[str, list[str]]] = {}
    bands = set(_BANDS.values())
    for key in sorted(data, key=_key_order):
        if key in bands and any(b in data for b in _BANDS if _BANDS[b] == key):
            continue  # drawn as the band of its mean
        fig, title = place(key)
        out.setdefault(fig, {}).setdefault(title, []).append(key)
    return {f: out[f] for f in FIGURES if f in out}


def _key_order(key: str) -> tuple:
    fixed = list(_PLACES)
    return (
        fixed.index(key) if key in fixed else len(fixed),
        key != "reward/total",
        key != "reward/format",
        key,
    )


def _rolling_mean(values: Sequence[float], window: int) -> list[float]:
    """Centred moving average (no lag), the window shrinking at both ends."""
    half = window // 2
    prefix = [0.0]
    for v in values:
        prefix.append(prefix[-1] + v)
    n = len(values)
    return [
        (prefix[min(n, i + half + 1)] - prefix[max(0, i - half)]) / (min(n, i + half + 1) - max(0, i - half))
        for i in range(n)
    ]


_UNSMOOTHED = {"lr"}  # schedules are not noisy


def _draw_panel(ax, title: str, keys: list[str], data, n_steps: int) -> None:
    import matplotlib
    from matplotlib.ticker import MaxNLocator

    cmap = matplotlib.colormaps["tab10" if len(keys) <= 10 else "tab20"]
    for j, key in enumerate(keys):
        steps, values = data[key]
        color = cmap(j % cmap.N)
        label = key.rpartition("/")[2] if "/" in key else key
        sparse = len(steps) < 0.9 * n_steps or len(steps) <= 12
        if len(steps) > 50 and key not in _UNSMOOTHED:  # long runs: the raw curve faded, a moving mean on top
            ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(
                steps,
                _rolling_mean(values, max(5, len(steps) // 25)),
                color=color,
                label=label,
                linewidth=1.6,
            )
        else:
            ax.plot(
                steps,
                values,
                color=color,
                label=label,
                linewidth=1.4,
                marker="o" if sparse else None,
                markersize=3,
            )
        band = _BANDS.get(key)
        if band in data:
            b_steps, b_values = data[band]
            mean = dict(zip(steps, values))
            xs = [s for s in b_steps if s in mean]
            lo = [mean[s] - sd for s, sd in zip(b_steps, b_values) if s in mean]
            hi = [mean[s] + sd for s, sd in zip(b_steps, b_values) if s in mean]
            ax.fill_between(xs, lo, hi, color=color, alpha=0.2, linewidth=0, label=f"± {band}")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("step", fontsize=8)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # steps are whole: no tick at 2.5
    ax.tick_params(labelsize=8)
    ax.grid(True, alpha=0.3)
    if title == "learning rate":
        ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
    if len(keys) > 1 or any(k in _BANDS or "/" in k for k in keys):  # a task alone is still named
        ax.legend(fontsize=7, ncol=2 if len(keys) > 6 else 1, loc="best", framealpha=0.7)


def _save_figure(path: Path, title: str, figure_panels: dict[str, list[str]], data, n_steps: int) -> None:
    # imported when drawing: matplotlib takes 0.7 s, which a command stopped by a mistake must not wait for
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    n = len(figure_panels)
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(5.2 * ncols, 3.4 * nrows + 0.4), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, (panel, keys) in zip(axes, figure_panels.items()):
        _draw_panel(ax, panel, keys, data, n_steps)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title, fontsize=11)
    tmp = path.with_name(f".{path.name}.tmp")
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)  # a viewer never sees half a file


def plot_run(
    run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None, quiet: bool = False
) -> list[Path]:
    """PNG curves of a run's log.jsonl into run_dir/plots/ (or out_dir); returns the files written.

    `run_dir` is a run folder holding log.jsonl, or the log file itself. Never raises: a missing or empty log,
    missing matplotlib or a failed drawing is reported in one printed line."""
    written: list[Path] = []
    try:
        run = Path(run_dir)
        log = run if run.is_file() else run / "log.jsonl"
        run = log.parent
        rows = read_log(log)
        data = series(rows)
        if not data:
            if not quiet:
                print(
                    f"plot: nothing to plot in {log} "
                    f"({'no numeric rows' if log.exists() else 'no such file'})"
                )
            return written
        import matplotlib  # noqa: F401  (missing: the one line below, not one per figure)

        out = Path(out_dir) if out_dir is not None else run / PLOTS_DIR
        out.mkdir(parents=True, exist_ok=True)
        n_steps = len({_number(r.get("step")) for r in rows if "eval" not in r})
        for fig_name, figure_panels in panels(data).items():
            path = out / f"{fig_name}.png"
            try:
                _save_figure(path, f"{run.name}: {fig_name}", figure_panels, data, n_steps)
                written.append(path)
            except Exception as exc:  # one bad figure does not stop the others
                if not quiet:
                    print(f"plot: could not draw {path.name}: {type(exc).__name__}: {exc}")
        if not quiet and written:
            print(f"plots: {out}/ ({', '.join(p.name for p in written)})")
    except Exception as exc:
        if not quiet:
            print(f"plot: could not plot {run_dir}: {type(exc).__name__}: {exc}")
    return written


# ----------------------------------------------------------------------------- TensorBoard
def tag(key: str) -> str:
    """The TensorBoard tag of a flattened log key: keys with a "/" keep it, others go under their figure name;
    characters TensorBoard does not take become "_" ("@" reads "_at_": eval/detection/f1_at_0.5)."""
    key = key if "/" in key else f"{place(key)[0]}/{key}"
    return re.sub(r"[^A-Za-z0-9_./-]", "_", key.replace("@", "_at_"))


class TensorBoard:
    """TensorBoard event files written row by row, for the trainers' log rows:

        tb = TensorBoard(out / "tensorboard", purge_step=start_step + 1 if resumed else None)
        tb.write(row)      # every numeric value of the row (eval rows flattened) at row["step"]
        tb.close()

    `purge_step`: a resumed run redoes the steps after its checkpoint; TensorBoard then drops the events
    of those steps written before the crash. Needs tensorboardX (requirements-eval.txt); raises ImportError
    naming the install command when it is missing (asked-for output is never silently dropped).
    """

    def __init__(
        self,
        log_dir: str | os.PathLike,
        purge_step: int | None = None,
        flush_secs: int = 30,
        filename_suffix: str = "",
    ):
        try:
            from tensorboardX import SummaryWriter
        except ImportError as exc:
            raise ImportError(
                "TensorBoard output needs tensorboardX: pip install -r requirements-eval.txt"
            ) from exc
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self._writer = SummaryWriter(
            logdir=str(self.log_dir),
            purge_step=purge_step,
            flush_secs=flush_secs,
            filename_suffix=filename_suffix,
        )
        self._rows = 0

    def write(self, row: dict, step: int | None = None) -> None:
        """Every finite numeric value of the row at `step` (default row["step"], else the row count)."""
        if step is None:
            s = _number(row.get("step"))
            step = int(s) if s is not None else self._rows
        for key, value in scalars(row).items():
            self._writer.add_scalar(tag(key), value, global_step=step)
        self._rows += 1

    def flush(self) -> None:
        self._writer.flush()

    def close(self) -> None:
        self._writer.close()

    def __enter__(self) -> TensorBoard:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


_CONVERTED = ".from-log"  # the file-name suffix of event files log_to_tensorboard writes


def log_to_tensorboard(run_dir: str | os.PathLike, log_dir: str | os.PathLike | None = None) -> Path:
    """Convert a run's log.jsonl into event files in run_dir/tensorboard/ (or log_dir); returns that folder.

    Event files this converter wrote there before are replaced, so converting twice shows each point once."""
    run = Path(run_dir)
    log = run if run.is_file() else run / "log.jsonl"
    out = Path(log_dir) if log_dir is not None else log.parent / TENSORBOARD_DIR
    if out.is_dir():
        for old in out.glob(f"events.out.tfevents.*{_CONVERTED}"):
            old.unlink()
    with TensorBoard(out, filename_suffix=_CONVERTED) as tb:
        for row in read_log(log):
            tb.write(row)
    return out


def find_runs(path: Path) -> list[Path]:
    """The runs a command-line path stands for: a log file or a run folder itself; a folder of runs at any
    depth (runs/demo/<date-time>/{sft,grpo}) for every folder below it holding a log.jsonl, in name order."""
    if not path.is_dir():
        return [path]
    return sorted({log.parent for log in path.rglob("log.jsonl") if log.is_file()})


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "runs", nargs="+", help="run folders holding log.jsonl (or log files, or a folder of runs)"
    )
    p.add_argument("--out", default=None, help="where the PNGs go (default: RUN/plots; only with one run)")
    p.add_argument(
        "--tensorboard",
        action="store_true",
        help="also convert the log to RUN/tensorboard/ event files (default: %(default)s)",
    )
    args = p.parse_args(argv)
    runs, ok = [], True
    for run in map(Path, args.runs):
        found = find_runs(run)
        if run.is_dir() and not found:
            print(f"plot: no log.jsonl in {run} or any folder below it")
            ok = False
        elif run.is_dir() and found != [run]:
            print(f"{run}: {len(found)} runs ({', '.join(str(f.relative_to(run)) for f in found)})")
        runs += found or [run]
    if args.out and len(runs) > 1:
        p.error("--out takes one run")
    for run in runs:
        ok &= bool(plot_run(run, args.out))
        if args.tensorboard:
            try:
                print(f"tensorboard: {log_to_tensorboard(run)}/")
            except ImportError as exc:
                print(f"tensorboard: {exc}")
                ok = False
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
