"""The versioned `sweep.json` schema: the version a file carries, and reading a file."""

import json

import pytest

from tether.analysis.report import render_report
from tether.analysis.schema import SCHEMA_VERSION, check_sweep, read_sweep
from tether.analysis.summary import summarize
from tether.errors import InputError

ROWS = [{"kind": "ppo", "label": "β=0.1", "beta": 0.1, "kl": 0.5, "proxy_reward": 1.0}]


def test_the_current_version_and_a_file_from_before_versions_are_read():
    check_sweep({"schema_version": SCHEMA_VERSION, "rows": ROWS})
    check_sweep({"rows": ROWS})  # written before the key existed: the layout of version 1
    assert SCHEMA_VERSION == 1


@pytest.mark.parametrize("version", [2, 0, "1", None, True, 1.5])
def test_an_unknown_version_is_an_input_error_naming_the_field(version):
    data = {"schema_version": version, "rows": ROWS}
    message = f'"schema_version": sweep.json schema version {version!r} is not one this tether reads'
    for read in (check_sweep, summarize, render_report):
        with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
            read(data)


def test_read_sweep_names_the_file(tmp_path):
    path = tmp_path / "sweep.json"
    path.write_text(json.dumps({"schema_version": SCHEMA_VERSION, "rows": ROWS}))
    assert read_sweep(path)["rows"] == ROWS
    path.write_text(json.dumps({"schema_version": 99, "rows": ROWS}))
    with pytest.raises(InputError, match=r'sweep.json: "schema_version": sweep.json schema version 99 .* version 1'):
        read_sweep(path)
    path.write_text(json.dumps({"rows": [{"kind": "ppo", "label": "β=1", "beta": 1.0}]}))
    with pytest.raises(InputError, match=r'sweep.json: "rows\[0\].kl": a ppo row needs kl or sqrt_kl'):
        read_sweep(path)
    path.write_text("{not json")
    with pytest.raises(InputError, match="sweep.json: cannot read a sweep.json"):
        read_sweep(path)
    with pytest.raises(InputError, match="cannot read a sweep.json"):
        read_sweep(tmp_path / "missing.json")
