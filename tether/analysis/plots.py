"""Figures for a sweep: the reward–KL frontier, learning curves, detectors, reward-model curves.

Each function draws one figure and returns it as PNG bytes; with `path` it also
writes the PNG there atomically. Figures are built with `matplotlib.figure.Figure`
directly (no pyplot), so nothing changes global matplotlib state and no display
is needed. Rows are those of `sweep.json` (`tether.analysis.schema.Row`).

Colours are fixed across figures: fixed-β PPO runs go from dark (small β, loose
tether) to light (large β) along viridis; best-of-n is orange; on the frontier each
other method has a colour and marker of its own (`METHOD_STYLES`) and mitigation
runs are grey; the SFT reference is black or grey.
"""

import functools
import io
import math

import matplotlib
import matplotlib.ticker
import numpy as np
from matplotlib.figure import Figure

from tether.analysis.findings import MIN_FIT_POINTS, REFUSAL_THRESHOLD, peak_status
from tether.analysis.frontier import FIT_KINDS, fixed_beta_rows, row_sqrt_kl
from tether.analysis.schema import ROW_KINDS
from tether.io import atomic_open

DPI = 120
BON_COLOR = "#d55e00"
OPTIMUM_COLOR = "#009e73"
METHOD_STYLES = {"ppo": ("#2c3e70", "o"), "rloo": ("#56b4e9", "v"), "grpo": ("#cc79a7", "P"), "dpo": ("#8c564b", "X"),
                 "bon": (BON_COLOR, "o")}
"""Method (row kind) → (colour, marker) on the frontier; its fit is dashed in the colour (PPO's points are shaded by β)."""
OTHER_MARKERS = {"ppo_adaptive": "D", "ppo_ensemble": "s", "ppo_early_stop": "^"}
OTHER_COLORS = ["#7f7f7f", "#c7c7c7", "#4d4d4d", "#a3a3a3"]
"""Mitigation rows: greys, apart from the methods' colours."""
STYLE = {
    "font.size": 10, "axes.titlesize": 11, "axes.titleweight": "bold", "axes.labelsize": 10,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True,
    "grid.alpha": 0.35, "grid.linewidth": 0.6, "legend.fontsize": 8.5, "legend.frameon": False,
    "xtick.labelsize": 9, "ytick.labelsize": 9, "figure.facecolor": "white",
}
SQRT_KL_LABEL = "√KL(π ‖ π_ref)   [√nats]"


def _styled(plot):
    """Run a plot function under `STYLE` (rc parameters are read as each artist is made)."""
    @functools.wraps(plot)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return plot(*args, **kwargs)
    return wrapper


def _figure(width: float, height: float) -> Figure:
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def _subplots(fig: Figure, nrows: int, ncols: int) -> list:
    return list(np.atleast_1d(fig.subplots(nrows, ncols)).ravel())


def _png(fig: Figure, path=None) -> bytes:
    """Render `fig` to PNG bytes; also write them to `path` (atomically) when given."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, facecolor="white")
    data = buf.getvalue()
    if path is not None:
        with atomic_open(path, "wb") as f:
            f.write(data)
    return data


def beta_colors(rows: list[dict]) -> dict[str, tuple]:
    """Row label → viridis colour, by increasing β over the fixed-β PPO rows."""
    ppo = fixed_beta_rows(rows)
    shades = np.linspace(0.0, 0.85, max(len(ppo), 2))
    return {r["label"]: matplotlib.colormaps["viridis"](s) for r, s in zip(ppo, shades)}


def _no_data(ax, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, color="#777")
    ax.set_xticks([])
    ax.set_yticks([])


def _fit_label(name: str, fit) -> str:
    """"PPO fit, R²=0.88, peak √KL=0.75" (the peak only where the fit predicts one within reach)."""
    label = f"{name} fit, R²={fit.r2:.2f}"
    return label + (f", peak √KL={fit.peak_d:.2f}" if peak_status(fit) in ("measured", "extrapolated") else "")


def _draw_fit(ax, fit, d_max: float, color, name: str, gid: str) -> None:
    """The fitted curve over its own points' range (to `d_max` when the fit does not record it), dashed in the
    method's colour, its predicted peak an open circle; the line's `gid` is "fit:" + the fit's name in `fits`."""
    d_max = min(d_max, 1.1 * fit.d_max) if fit.d_max is not None else d_max
    grid = np.linspace(0.0, d_max, 200)
    ax.plot(grid, fit.predict(grid), ls="--", lw=1.4, color=color, alpha=0.9, label=_fit_label(name, fit), gid=gid)
    peak = fit.peak_d
    if peak_status(fit) in ("measured", "extrapolated") and 0 < peak <= d_max:
        ax.plot([peak], [fit.peak_reward], marker="o", ms=8, mfc="none", mec=color, mew=1.5, ls="none")


def fit_key(reward: str, kind: str) -> str:
    """The key in `fits` of method `kind`'s fit of `reward`: "gold_rl" for PPO, else "gold_" + kind (`FIT_KINDS`)."""
    return f"{reward}_" + next(name for name, row_kind in FIT_KINDS.items() if row_kind == kind)


def drawn_fit(fits: dict, reward: str, kind: str):
    """The `Fit` of method `kind` ("ppo", "rloo", "grpo", "dpo", "bon") for `reward`, or None when it has none or
    its fit explains too little to draw (`peak_status` "no fit": R² below `findings.MIN_FIT_R2`)."""
    fit = fits.get(fit_key(reward, kind))
    return None if fit is None or peak_status(fit) == "no fit" else fit


def _short_name(kind: str) -> str:
    """"PPO", "RLOO", "GRPO", "DPO", "best-of-n": the method's name in `ROW_KINDS` without ", fixed β"."""
    return ROW_KINDS[kind].split(",")[0]


def _method_label(kind: str, rows: list[dict], fits: dict, reward: str) -> str:
    """A method's legend entry: its name ("GRPO, β = 0.01, 0.1, 1": the β list where its points are not all
    annotated), and "no fit" (with the R² that was too low, or the too few points) when no fit of it is drawn."""
    label = ROW_KINDS[kind]
    if kind not in ("ppo", "bon"):
        label = f"{_short_name(kind)}, β = " + ", ".join(format(r["beta"], "g") for r in rows if r.get("beta") is not None)
    if drawn_fit(fits, reward, kind) is not None:
        return label
    fit = fits.get(fit_key(reward, kind))
    if fit is None or fit.r2 is None:
        return label + " (no fit)"
    if fit.n_points < MIN_FIT_POINTS:
        return label + f" (no fit: {fit.n_points} points)"
    return label + f" (no fit: R²={fit.r2:.2f})"


def _method_points(ax, rows: list[dict], kind: str, key: str, label: str, beta_shades: dict) -> None:
    """One method's points; PPO's shaded by β (`beta_colors`) and each annotated, best-of-n joined by a line and each
    annotated with its n; another method's annotated at its smallest and largest β only (its legend lists them all)."""
    color, marker = METHOD_STYLES[kind]
    d, y = [row_sqrt_kl(r) for r in rows], [r[key] for r in rows]
    if kind == "bon":
        ax.plot(d, y, marker=marker, ms=4.5, lw=1.3, color=color, label=label, zorder=3)
    else:
        fill = [beta_shades[r["label"]] for r in rows] if kind == "ppo" else color
        ax.scatter(d, y, s=46, zorder=4, c=fill, marker=marker, edgecolors="black", linewidths=0.5, label=label)
    for i, (r, x, v) in enumerate(zip(rows, d, y)):
        if kind not in ("ppo", "bon") and 0 < i < len(rows) - 1:
            continue
        if kind == "bon":
            text = f"n={r['n']}" if r.get("n") is not None else r["label"]
        else:
            text = f"β={r['beta']:g}" if r.get("beta") is not None else r["label"]
        ax.annotate(text, (x, v), xytext=(4, -11) if kind == "bon" else (5, 4), textcoords="offset points",
                    fontsize=7.5, color="#333" if kind == "ppo" else color)


def _frontier_panel(ax, rows: list[dict], fits: dict, reward: str, optimum: list[dict]) -> None:
    key = f"{reward}_delta"
    ax.axhline(0.0, color="#999", lw=0.8)
    placed = [r for r in rows if r.get(key) is not None and (r.get("kl") is not None or r.get("sqrt_kl") is not None)]
    by_kind = {kind: sorted((r for r in placed if r.get("kind") == kind and (kind != "ppo" or r.get("beta") is not None)),
                            key=lambda r: r.get("n" if kind == "bon" else "beta") or 0) for kind in METHOD_STYLES}
    others = [r for r in placed if r.get("kind") not in METHOD_STYLES]
    optimum = sorted((o for o in optimum if o.get(key) is not None), key=lambda o: -o["beta"])
    d_all = [row_sqrt_kl(r) for r in placed + optimum] or [1.0]
    d_max = max(d_all) * 1.08
    ax.plot([0], [0], marker="*", ms=13, color="black", ls="none", label="SFT (reference)", zorder=5)
    shades = beta_colors(rows)
    for kind, method_rows in by_kind.items():
        if not method_rows:
            continue
        _method_points(ax, method_rows, kind, key, _method_label(kind, method_rows, fits, reward), shades)
        fit = drawn_fit(fits, reward, kind)
        if fit is not None:
            _draw_fit(ax, fit, d_max, METHOD_STYLES[kind][0], _short_name(kind), "fit:" + fit_key(reward, kind))
    for i, r in enumerate(others):
        ax.plot([row_sqrt_kl(r)], [r[key]], marker=OTHER_MARKERS.get(r["kind"], "P"), ms=8, ls="none",
                color=OTHER_COLORS[i % len(OTHER_COLORS)], mec="black", mew=0.5, label=r["label"], zorder=4)
    if optimum:
        ax.plot([row_sqrt_kl(o) for o in optimum], [o[key] for o in optimum], marker="x", ms=6, lw=1.2, ls=":",
                color=OPTIMUM_COLOR, label="π* ∝ π_ref·e^(r/β) (reweighted SFT samples)", zorder=3)
    ax.set_xlim(left=-0.02 * d_max, right=d_max * 1.12)
    ax.set_xlabel(SQRT_KL_LABEL)
    ax.set_ylabel(f"{reward} reward − SFT's")
    ax.set_title("Gold reward (the labeler) vs √KL" if reward == "gold" else "Proxy reward (reward model) vs √KL")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2)  # below the axes, off the data


@_styled
def frontier_figure(rows: list[dict], fits: dict, optimum: list[dict] | None = None) -> Figure:
    """Gold and proxy reward gain over SFT against d = √KL: each method's points in its colour and marker
    (`METHOD_STYLES`), its Gao et al. (2022) fit dashed in the same colour where the fit holds (`drawn_fit`).

    `fits` maps "{gold|proxy}_{rl|bon|rloo|grpo|dpo}" to `Fit`s (any may be missing; "rl" is PPO's);
    `optimum` (sweep.json's) is drawn dotted. The gold panel is left out when no row has a gold reward.
    """
    rewards = [w for w in ("gold", "proxy") if any(r.get(f"{w}_delta") is not None for r in rows)] or ["proxy"]
    fig = _figure(6.2 * len(rewards), 6.0)
    for ax, reward in zip(_subplots(fig, 1, len(rewards)), rewards):
        _frontier_panel(ax, rows, fits, reward, optimum or [])
    return fig


@_styled
def plot_frontier(rows: list[dict], fits: dict, optimum: list[dict] | None = None, path=None) -> bytes:
    """`frontier_figure` as PNG bytes (written to `path` too when given)."""
    return _png(frontier_figure(rows, fits, optimum), path)


LEARNING_CURVE_PANELS = (
    ("objective/scores", "Proxy reward (RM score)", "mean RM score"),
    ("gold/score", "Gold reward", "mean gold utility"),
    ("objective/kl", "KL to the reference", "KL [nats]"),
)


@_styled
def plot_learning_curves(curves: dict[str, list[dict]], path=None) -> bytes:
    """Proxy score, gold score and KL against PPO step, one line per run label.

    `curves[label]` is a run's metrics: dicts with "step" and TRL-named keys
    ("objective/scores", "gold/score", "objective/kl"); missing values are skipped and
    a panel with no data at all is left out. Lines keep the order of `curves`.
    """
    panels = [p for p in LEARNING_CURVE_PANELS
              if any(m.get(p[0]) is not None for curve in curves.values() for m in curve)]
    fig = _figure(4.0 * max(len(panels), 1), 4.2)
    axes = _subplots(fig, 1, max(len(panels), 1))
    if not panels:
        _no_data(axes[0], "no learning curves recorded")
        return _png(fig, path)
    shades = matplotlib.colormaps["viridis"](np.linspace(0.0, 0.85, max(len(curves), 2)))
    for ax, (key, title, ylabel) in zip(axes, panels):
        for (label, curve), color in zip(curves.items(), shades):
            points = [(m["step"], m[key]) for m in curve if m.get(key) is not None]
            if points:
                ax.plot(*zip(*points), lw=1.5, color=color, label=label)
        ax.set_title(title)
        ax.set_xlabel("PPO step")
        ax.set_ylabel(ylabel)
    by_label = {label: h for ax in axes for h, label in zip(*ax.get_legend_handles_labels())}
    fig.legend(list(by_label.values()), list(by_label), loc="outside lower center", ncols=min(len(by_label), 8))
    return _png(fig, path)


DETECTOR_PANELS = (
    ("benign_refusal_rate", "Refusals of benign prompts", "share of responses"),
    ("filler_per_response", "Filler phrases", "phrases per response"),
    ("repetition_rate", "Repetitive responses", "share of responses"),
    ("mean_length", "Response length", "mean words per response"),
)


@_styled
def plot_detectors(rows: list[dict], path=None, sft_baseline: dict | None = None,
                   refusal_threshold: float | None = REFUSAL_THRESHOLD, include_bon: bool = True) -> bytes:
    """Each detector against β (log axis) for the fixed-β PPO rows.

    The SFT policy (`sft_baseline`) is a dotted grey line; with `include_bon` the
    best-of-n row with the largest n is a dashed orange line; `refusal_threshold` is
    drawn on the refusal panel (the "safe but useless" line). When no row has a
    benign refusal rate, the refusal panel shows the rate over all prompts.
    """
    ppo = [r for r in fixed_beta_rows(rows) if r["beta"] > 0]
    bon = max((r for r in rows if r.get("kind") == "bon"), key=lambda r: r.get("n") or 0, default=None)
    colors = beta_colors(rows)
    fig = _figure(10.5, 6.6)
    for ax, (key, title, ylabel) in zip(_subplots(fig, 2, 2), DETECTOR_PANELS):
        if key == "benign_refusal_rate" and not any(r.get(key) is not None for r in ppo):
            key, title = "refusal_rate", "Refusals (all prompts)"
        points = [(r["beta"], r[key], colors[r["label"]]) for r in ppo if r.get(key) is not None]
        if not points:
            _no_data(ax, f"{title}: not measured")
            continue
        betas, values, shade = zip(*points)
        ax.plot(betas, values, color="#555", lw=1.2, zorder=2)
        ax.scatter(betas, values, c=list(shade), s=40, edgecolors="black", linewidths=0.5, zorder=3, label="PPO")
        if sft_baseline and sft_baseline.get(key) is not None:
            ax.axhline(sft_baseline[key], color="#444", ls=":", lw=1.3, label="SFT")
        if include_bon and bon is not None and bon.get(key) is not None:
            ax.axhline(bon[key], color=BON_COLOR, ls="--", lw=1.2, label=f"{bon['label']}")
        if key.endswith("refusal_rate") and refusal_threshold is not None:
            ax.axhline(refusal_threshold, color="#c0392b", ls="-.", lw=1.0, label=f"threshold {refusal_threshold:g}")
        ax.set_xscale("log")
        ax.set_ylim(bottom=0)
        ax.set_title(title)
        ax.set_xlabel("KL coefficient β (log scale)")
        ax.set_ylabel(ylabel)
        ax.legend(loc="best")
    return _png(fig, path)


@_styled
def plot_style_shares(rows: list[dict], path=None, sft_baseline: dict | None = None) -> bytes:
    """One stacked horizontal bar per run: the share of each response style (`style_shares`)."""
    runs = ([("SFT", sft_baseline["style_shares"])] if sft_baseline and sft_baseline.get("style_shares") else [])
    runs += [(r["label"], r["style_shares"]) for r in rows if r.get("style_shares")]
    styles = list(dict.fromkeys(s for _, shares in runs for s in shares))
    fig = _figure(10.5, 0.42 * max(len(runs), 2) + 1.6)
    ax = _subplots(fig, 1, 1)[0]
    if not runs:
        _no_data(ax, "no style shares recorded")
        return _png(fig, path)
    palette = matplotlib.colormaps["tab10"](np.arange(len(styles)) % 10)
    y = np.arange(len(runs))[::-1]
    left = np.zeros(len(runs))
    for style, color in zip(styles, palette):
        widths = np.array([shares.get(style, 0.0) for _, shares in runs])
        ax.barh(y, widths, left=left, color=color, edgecolor="white", linewidth=0.6, label=style, height=0.7)
        for yi, li, wi in zip(y, left, widths):
            if wi >= 0.08:
                ax.text(li + wi / 2, yi, f"{wi:.0%}", ha="center", va="center", fontsize=7.5, color="white")
        left += widths
    ax.set_yticks(y, [label for label, _ in runs])
    ax.set_xlim(0, 1)
    ax.xaxis.set_major_formatter(matplotlib.ticker.PercentFormatter(1.0))
    ax.grid(axis="y", visible=False)
    ax.set_xlabel("share of responses")
    ax.set_title("Response styles per run (world's classifier)")
    fig.legend(loc="outside right upper", title="style")
    return _png(fig, path)


RM_CURVE_KEYS = {"loss": ("train/loss", "eval/loss"), "accuracy": ("train/accuracy", "eval/accuracy")}
"""Panel → the `history` keys drawn in it (train, eval)."""


@_styled
def plot_rm_curves(history: list[dict], path=None, ceiling: float | None = None) -> bytes:
    """Reward-model loss and pairwise accuracy against step, train and held-out.

    `history` is a list of dicts with "step" and any of "train/loss", "eval/loss",
    "train/accuracy", "eval/accuracy" (eval may be logged less often; missing
    values are skipped). `ceiling` (the labeler's agreement with its own noisy
    labels) and chance (0.5) are drawn on the accuracy panel.
    """
    fig = _figure(10.0, 3.8)
    for ax, (panel, keys) in zip(_subplots(fig, 1, 2), RM_CURVE_KEYS.items()):
        for key, color in zip(keys, ("#0072b2", BON_COLOR)):
            points = [(m["step"], m[key]) for m in history if m.get(key) is not None
                      and math.isfinite(m[key])]
            if points:
                ax.plot(*zip(*points), lw=1.5, color=color, marker="o" if len(points) < 30 else None, ms=3,
                        label=key.split("/")[0].replace("eval", "held-out"))
        if panel == "accuracy":
            ax.axhline(0.5, color="#999", ls=":", lw=1.0, label="chance")
            if ceiling is not None:
                ax.axhline(ceiling, color="#444", ls="--", lw=1.2, label=f"labeler ceiling {ceiling:.2f}")
        ax.set_title(f"Reward model {panel}")
        ax.set_xlabel("training step")
        ax.set_ylabel("Bradley–Terry loss [nats]" if panel == "loss" else "pairwise accuracy")
        if ax.has_data():
            ax.legend(loc="lower right" if panel == "accuracy" else "upper right")
        else:
            _no_data(ax, f"no {panel} recorded")
    return _png(fig, path)


@_styled
def plot_score_tradeoff(rows: list[dict], betas: list[float], path=None) -> bytes:
    """r − β·KL against β, one line per scored response (`tether score`'s rows: "response", "objective").

    The legend sits to the right of the axes, off the lines.
    """
    fig = _figure(9.0, 4.2)
    ax = fig.subplots()
    shades = np.linspace(0.0, 0.85, max(len(rows), 2))
    for i, (row, shade) in enumerate(zip(rows, shades)):
        text = " ".join(row["response"].split())
        ax.plot(betas, [row["objective"][format(b, "g")] for b in betas], marker="o", ms=4, lw=1.5,
                color=matplotlib.colormaps["viridis"](shade), label=f"#{i} {text[:32] + '…' if len(text) > 32 else text}")
    ax.set_xscale("symlog", linthresh=min([b for b in betas if b > 0], default=1.0))
    ax.set_title("Reward − β·KL for each response")
    ax.set_xlabel("β (KL coefficient)")
    ax.set_ylabel("r − β·KL")
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0))
    return _png(fig, path)
