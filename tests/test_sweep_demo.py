"""`tether demo --quick` end to end, its report, and sweep resumability (issue 7).

The demo runs once (a module fixture, about a minute on 2 CPU cores) and every test reads its output.
"""

import json
import math
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from tether.analysis.formats import fmt
from tether.config import build_config
from tether.analysis.summary import summarize
from tether.pipelines.demo import DemoConfig
from tether.pipelines.sweep import SweepConfig, expected_cost, ppo_config, run_specs, run_sweep

pytestmark = pytest.mark.slow

QUICK = DemoConfig(quick=True)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "demo"
    result = subprocess.run([sys.executable, "-m", "tether", "demo", "--quick", "--threads", "1", "--out", str(out)],
                            capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-4000:]
    return {"out": out, "stdout": result.stdout, "sweep": json.loads((out / "sweep" / "sweep.json").read_text())}


def test_demo_runs_every_stage_and_prints_the_report_path(demo):
    out = demo["out"]
    for path in ("data/sft.jsonl", "sft/model/model.safetensors", "collect/pairs.jsonl", "collect_eval/pairs.jsonl",
                 "rm/model/model.safetensors", "rm/curves.png", "rm_1/model/model.safetensors", "rm_eval/eval.json",
                 "rm_eval/disagreements.jsonl", "sweep/sweep.json", "sweep/report.html"):
        assert (out / path).is_file(), path
    assert f"report: {out / 'sweep' / 'report.html'}" in demo["stdout"]


def test_demo_ensemble_members_learn_the_same_pairs_from_rater_pools_with_other_biases(demo):
    read = lambda path: [json.loads(line) for line in (demo["out"] / path).read_text().splitlines()]
    collected, member = read("collect/pairs.jsonl"), read("data/pairs_rm_1.jsonl")
    assert [{r["chosen"], r["rejected"]} for r in member] == [{r["chosen"], r["rejected"]} for r in collected]
    assert member[0]["labeler"]["biases"]["edgy_refusal_bonus"] == 0 < collected[0]["labeler"]["biases"]["edgy_refusal_bonus"]
    assert demo["sweep"]["pipeline"]["ensemble"] == {"rm": "filler and edgy-refusal biases, seed 0",
                                                     "rm_1": "no edgy-refusal bias, seed 1"}


def test_demo_collects_the_configured_number_of_pairs(demo):
    collect = demo["sweep"]["pipeline"]["collect"]
    assert collect["n_pairs"] + collect["dropped_identical"] == QUICK.n_pairs
    assert collect["n_pairs"] >= 0.95 * QUICK.n_pairs
    eval_pairs = (demo["out"] / "collect_eval" / "pairs.jsonl").read_text().splitlines()
    assert 0.95 * QUICK.eval_pairs <= len(eval_pairs) <= QUICK.eval_pairs


def test_sweep_has_a_ppo_row_per_beta_and_best_of_n_rows_with_their_analytic_kl(demo):
    rows = demo["sweep"]["rows"]
    ppo = [r for r in rows if r["kind"] == "ppo"]
    assert sorted(r["beta"] for r in ppo) == sorted(QUICK.betas)
    for row in ppo:
        finished = json.loads((demo["out"] / "sweep" / row["run_dir"] / "eval.json").read_text())
        assert row["kl"] == finished["kl"] and row["proxy_reward"] == finished["proxy_reward"]
        assert math.isfinite(row["gold_reward"]) and row["curve"]
    bon = {r["n"]: r for r in rows if r["kind"] == "bon"}
    assert sorted(bon) == [2 ** i for i in range(QUICK.bon_max.bit_length())]
    for n, row in bon.items():
        assert row["kl"] == pytest.approx(math.log(n) - (n - 1) / n, abs=1e-12), n
    assert {r["kind"] for r in rows} >= {"ppo", "bon", "ppo_ensemble", "ppo_early_stop"}


def test_demo_puts_grpo_and_dpo_on_the_frontier_with_kl_measured_like_ppo(demo):
    """A row per (method, β), each a finished run whose KL comes from its own samples against the reference; DPO's
    held-out implicit margin beside the reward model's margin on the same pairs; a gold fit per method with two or more points."""
    rows, sweep = demo["sweep"]["rows"], demo["sweep"]
    for kind, betas in (("grpo", QUICK.grpo_betas), ("dpo", QUICK.dpo_betas)):
        runs = [r for r in rows if r["kind"] == kind]
        assert sorted(r["beta"] for r in runs) == sorted(betas), kind
        for row in runs:
            finished = json.loads((demo["out"] / "sweep" / row["run_dir"] / "eval.json").read_text())
            assert row["kl"] == finished["kl"] and row["kl"] >= 0 and math.isfinite(row["gold_reward"])
    assert all(math.isfinite(r["dpo_margin"]) and 0 <= r["dpo_accuracy"] <= 1 for r in rows if r["kind"] == "dpo")
    rm = sweep["pipeline"]["reward_model"]  # `rm eval` on the pairs DPO holds out (collect_eval): the same numbers
    for row in (r for r in rows if r["kind"] == "dpo"):
        assert row["rm_n_pairs"] == rm["n_pairs"] and row["rm_margin"] == pytest.approx(rm["mean_margin"], abs=1e-4)
        assert row["rm_accuracy"] == pytest.approx(rm["accuracy"], abs=1.5 / rm["n_pairs"])  # a near-tie may flip
    assert {"gold_grpo", "gold_dpo"} <= set(sweep["fits"])
    assert any(p.startswith("Methods on one frontier") for p in summarize(sweep))


class TableParser(HTMLParser):
    """Every <table> of a page as {caption: [[cell text, ...] per body row]}."""

    def __init__(self):
        super().__init__()
        self.tables, self.caption, self.rows, self.cell, self.in_caption, self.in_body = {}, "", [], None, False, False

    def handle_starttag(self, tag, attrs):
        if tag == "table":
            self.caption, self.rows = "", []
        elif tag == "caption":
            self.in_caption = True
        elif tag == "tbody":
            self.in_body = True
        elif tag == "tr" and self.in_body:
            self.rows.append([])
        elif tag == "td" and self.in_body:
            self.cell = ""

    def handle_endtag(self, tag):
        if tag == "table":
            self.tables[self.caption] = self.rows
        elif tag == "caption":
            self.in_caption = False
        elif tag == "tbody":
            self.in_body = False
        elif tag == "td" and self.cell is not None:
            self.rows[-1].append(self.cell)
            self.cell = None

    def handle_data(self, data):
        if self.in_caption:
            self.caption += data
        elif self.cell is not None:
            self.cell += data


def test_report_tables_show_the_numbers_of_sweep_json(demo):
    parser = TableParser()
    parser.feed((demo["out"] / "sweep" / "report.html").read_text())
    table = next(rows for caption, rows in parser.tables.items() if caption.startswith("rewards and KL"))
    header = ["run", "kind", "β", "n", "KL [nats]", "√KL", "proxy", "Δ proxy", "gold", "Δ gold", "gap"]
    shown = {cells[0]: dict(zip(header, cells)) for cells in table}
    sweep = demo["sweep"]
    expected = [{"label": "SFT", "kl": 0.0, **sweep["sft_baseline"]}] + sweep["rows"]
    assert len(table) == len(expected)
    for row in expected:
        cells = shown[row["label"]]
        assert (cells["KL [nats]"], cells["proxy"], cells["gold"]) == \
            (fmt(row["kl"]), fmt(row["proxy_reward"]), fmt(row["gold_reward"])), row["label"]


def test_report_images_load_in_headless_chromium(demo, browser):
    errors = []
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto((demo["out"] / "sweep" / "report.html").as_uri())
        page.wait_for_load_state("load")
        images = page.evaluate("Array.from(document.images).map(i => [i.id, i.complete, i.naturalWidth])")
    finally:
        page.close()
    assert errors == []
    assert len(images) >= 4 and all(complete and width > 0 for _, complete, width in images), images


def test_rerun_sweep_does_not_redo_finished_runs(demo, tmp_path, capsys):
    """The quick demo's sweep, copied and run again (small best-of-n): every PPO, GRPO and DPO run is read back, not redone."""
    sweep_dir = tmp_path / "sweep"
    shutil.copytree(demo["out"] / "sweep", sweep_dir)
    metrics = sorted(sweep_dir.glob("runs/*/metrics.jsonl"))
    # the β runs of PPO, GRPO and DPO, the ensemble and the early-stopping row
    assert len(metrics) == len(QUICK.betas) + len(QUICK.grpo_betas) + len(QUICK.dpo_betas) + 2
    mtimes = {p: p.stat().st_mtime_ns for p in metrics}
    cfg = build_config(SweepConfig, {"out": str(sweep_dir), "bon_ns": [1, 2], "bon_prompts": 4},
                       sweep_dir / "config.yaml")
    data = run_sweep(cfg)
    printed = capsys.readouterr().out
    for path in metrics:
        assert f"sweep: {path.parent.name} finished earlier, not redone" in printed
        assert path.stat().st_mtime_ns == mtimes[path], path
    before = {r["label"]: r for r in demo["sweep"]["rows"] if r["kind"] != "bon"}
    after = {r["label"]: r for r in data["rows"] if r["kind"] != "bon"}
    assert before.keys() == after.keys()
    assert all(after[k]["kl"] == before[k]["kl"] and after[k]["proxy_reward"] == before[k]["proxy_reward"] for k in before)


def tiny_ppo_config(tiny_dirs, out, **kw):
    from tether.pipelines.ppo import PPOConfig
    base = dict(policy=str(tiny_dirs["policy"]), reward_model=str(tiny_dirs["rm"]), prompts=str(tiny_dirs["prompts"]),
                out=str(out), steps=2, batch_size=8, minibatch_size=8, micro_batch_size=4, max_new_tokens=4,
                eval_every=0, eval_samples=8, save_every=0, device="cpu", threads=1, lr=2e-4)
    return PPOConfig(**{**base, **kw})


def test_sweep_refuses_to_reuse_a_run_made_with_other_settings(tiny_dirs, tmp_path):
    import dataclasses
    from tether.errors import InputError
    from tether.pipelines.ppo import run_ppo
    from tether.pipelines.sweep import train_runs
    cfg = tiny_ppo_config(tiny_dirs, tmp_path / "run", steps=1, threads=0)
    first = run_ppo(cfg)
    assert train_runs([dataclasses.replace(cfg, threads=1)], jobs=1)[0]["proxy_reward"] == first["proxy_reward"]
    with pytest.raises(InputError, match=r'"lr": this run was made with other settings \(lr\)'):
        train_runs([dataclasses.replace(cfg, lr=1e-5)], jobs=2)


def test_parallel_runs_give_the_results_of_runs_in_turn(tiny_dirs, tmp_path):
    """jobs=2 trains two runs in worker processes; with the same thread count they equal runs made one by one."""
    from tether.pipelines.sweep import train_runs
    betas = (0.1, 1.0)
    one_by_one = train_runs([tiny_ppo_config(tiny_dirs, tmp_path / "serial" / f"b{b}", beta=b) for b in betas], jobs=1)
    parallel = train_runs([tiny_ppo_config(tiny_dirs, tmp_path / "parallel" / f"b{b}", beta=b, threads=2) for b in betas], jobs=2)
    for b, a, c in zip(betas, one_by_one, parallel):
        assert a == c, b
        serial_rows = (tmp_path / "serial" / f"b{b}" / "metrics.jsonl").read_text().splitlines()
        parallel_rows = (tmp_path / "parallel" / f"b{b}" / "metrics.jsonl").read_text().splitlines()
        strip = lambda rows: [{k: v for k, v in json.loads(r).items() if not k.startswith(("time/", "memory/"))} for r in rows]
        assert strip(serial_rows) == strip(parallel_rows)
    assert one_by_one[0]["kl"] != one_by_one[1]["kl"]


def test_a_failed_parallel_run_raises_its_error_in_the_sweep(tiny_dirs, tmp_path):
    from tether.errors import InputError
    from tether.pipelines.sweep import train_runs
    configs = [tiny_ppo_config(tiny_dirs, tmp_path / "good"),
               tiny_ppo_config(tiny_dirs, tmp_path / "bad", reward_model=str(tmp_path / "no_such_rm"))]
    with pytest.raises(InputError, match="no_such_rm"):
        train_runs(configs, jobs=2)


def test_runs_start_longest_first_ensemble_then_early_stop_then_plain(tmp_path):
    """Workers take runs in this order (the early-stop row evaluates twice as often): a long run started last
    would finish alone on one core."""
    cfg = SweepConfig(out=str(tmp_path), betas=[0.01, 1.0], ensemble=["rm_1"], early_stop=True,
                      ppo=dict(policy="p", reward_model="rm", prompts="x.jsonl", gold="assistant", steps=40, eval_every=40))
    costs = {name: expected_cost(ppo_config(cfg, tmp_path / name, overrides)) for name, overrides, _ in run_specs(cfg)}
    order = sorted(costs, key=costs.get, reverse=True)
    assert order[:2] == ["ensemble_beta_0.01", "early_stop_beta_0.01"], order
    assert set(order[2:]) == {"beta_0.01", "beta_1"}


@pytest.mark.parametrize("early_stop_every, checks_every", [(0, 20), (10, 10)])
def test_early_stop_row_checks_at_its_own_interval_or_twice_per_evaluation(tmp_path, early_stop_every, checks_every):
    cfg = SweepConfig(out=str(tmp_path), betas=[0.01], early_stop=True, early_stop_every=early_stop_every,
                      ppo=dict(policy="p", reward_model="rm", prompts="x.jsonl", steps=40, eval_every=40))
    overrides = {name: o for name, o, _ in run_specs(cfg)}
    assert overrides["early_stop_beta_0.01"]["eval_every"] == checks_every
    assert ppo_config(cfg, tmp_path / "b", overrides["beta_0.01"]).eval_every == 40

