"""bench/gpu_e2e.py runs every phase end to end at `--size tiny` on CPU (the GPU run uses the same script)."""

import json
import sys
from pathlib import Path


sys.path.insert(0, str(Path(__file__).parent.parent / "bench"))


def test_gpu_e2e_runs_every_phase_at_tiny_size_with_fixed_response_lengths(tmp_path, capsys):
    import gpu_e2e
    rows = gpu_e2e.main(["--size", "tiny", "--device", "cpu", "--arch", "llama", "--iterations", "1", "--warmup", "0",
                         "--fixed-new-tokens", "--no-trl", "--json", str(tmp_path / "e2e.json")])
    assert [r["phase"] for r in rows] == ["sft", "rm train", "ppo (exact KL)", "ppo (k1 KL)"]
    assert all(r["s_per_step"] > 0 and r["tokens_per_s"] > 0 and r["tflops"] > 0 and r["peak_gb"] > 0 for r in rows)
    max_new = gpu_e2e.SIZES["tiny"]["max_new_tokens"]
    assert [r["mean_new_tokens"] for r in rows[2:]] == [max_new, max_new]  # no response ends early
    saved = json.loads((tmp_path / "e2e.json").read_text())
    assert saved["rows"] == rows and saved["matmul_peak_tflops"] > 0
    assert "TRL left out (--no-trl)" in capsys.readouterr().out
