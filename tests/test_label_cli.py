"""The `tether label` commands: `label stats` on its own, the old `--stats` spelling, and `--allow-remote`."""

import json

import pytest

from tether.cli import main
from tether.errors import InputError
from tether.label.pairs import load_items, presentation_order
from tether.label.server import LabelConfig, exposure_warning
from tether.label.stats_command import LabelStatsConfig
from tether.label.store import LabelStore
from test_label_server import pair_rows, write_jsonl


@pytest.fixture
def labelled(tmp_path):
    """(pairs file, label file) with alice's answer "left" to each of 3 pairs."""
    pairs = write_jsonl(tmp_path / "pairs.jsonl", pair_rows(3))
    out = tmp_path / "labels.jsonl"
    store = LabelStore(load_items(pairs), out, "alice")
    for item in store.items:
        store.answer(item.id, 0, "left", presentation_order(0, "alice", item), None)
    store.close()
    return pairs, out


def test_label_stats_is_its_own_command(labelled, capsys):
    pairs, out = labelled
    assert main(["label", "stats", "--out", str(out), "--pairs", str(pairs)]) == 0
    captured = capsys.readouterr()
    stats = json.loads(captured.out)
    assert stats["labels"] == 3 and stats["pairs"] == 3 and captured.err == ""


def test_the_old_stats_flag_gives_the_same_json_and_a_one_line_hint(labelled, capsys):
    pairs, out = labelled
    assert main(["label", "stats", "--out", str(out), "--pairs", str(pairs)]) == 0
    new = capsys.readouterr().out
    assert main(["label", "--stats", "--out", str(out), "--pairs", str(pairs)]) == 0
    captured = capsys.readouterr()
    assert captured.out == new
    assert captured.err == "tether label: --stats is now `tether label stats` (same options)\n"


def test_label_stats_config_validation(capsys):
    with pytest.raises(InputError, match='"out": required: the label file'):
        LabelStatsConfig()
    with pytest.raises(InputError, match=r'"gold": .other. is neither a built-in world \(assistant\) nor a reward-model directory'):
        LabelStatsConfig(out="labels.jsonl", gold="other")
    with pytest.raises(InputError, match=r'"gold": .other. is neither a built-in world \(assistant\) nor a reward-model directory'):
        LabelConfig(out="labels.jsonl", stats=True, gold="other")
    assert main(["label", "stats", "--pairs", "p.jsonl"]) == 2
    with pytest.raises(SystemExit, match="2"):  # argparse: serving options are not options of stats
        main(["label", "stats", "--out", "o.jsonl", "--host", "0.0.0.0"])
    assert "unrecognized arguments: --host" in capsys.readouterr().err


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "myhost.lan"])
def test_a_host_that_is_not_loopback_needs_allow_remote(tmp_path, capsys, host):
    pairs = tmp_path / "missing.jsonl"  # never read: the host is refused first (and a wrong pass cannot serve)
    out = tmp_path / "labels.jsonl"
    assert main(["label", "--pairs", str(pairs), "--out", str(out), "--host", host]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f'"host": {host} is not a loopback address' in err
    assert "--allow-remote true" in err and not out.exists()
    assert LabelConfig(pairs=str(pairs), out=str(out), host=host, allow_remote=True).host == host
    assert "not a loopback address" in exposure_warning(host)  # still printed when allowed


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "localhost"])
def test_loopback_hosts_need_no_allow_remote(host):
    assert LabelConfig(pairs="p.jsonl", out="labels.jsonl", host=host).allow_remote is False
