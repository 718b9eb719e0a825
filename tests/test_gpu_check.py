"""scripts/gpu-check.sh: refuses clearly without a GPU; its checks pass on the CPU (tiny models)."""
import json
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "scripts"))

import gpu_check  # noqa: E402


def test_without_a_gpu_the_script_stops_at_once_and_says_why(tmp_path):
    out = subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu-check.sh"), str(tmp_path / "r.json")],
        capture_output=True, text=True, timeout=600,
        env={"PATH": "/usr/bin:/bin", "GPU_CHECK_TIMEOUT": "600", "HOME": str(Path.home())},
    )
    if torch.cuda.is_available():
        assert gpu_check.device_problem("cuda") is None
    else:
        assert out.returncode == 3 and not (tmp_path / "r.json").exists()
        assert "gpu-check: cannot run on cuda:" in out.stderr
        assert ("CPU-only build" in out.stderr) == (torch.version.cuda is None)
    assert "unknown device" in gpu_check.device_problem("tpu")


def test_the_checks_pass_on_cpu_with_the_tiny_models(tmp_path):
    path = tmp_path / "report.json"
    assert gpu_check.main(["--device", "cpu", "--tiny-only", "--json", str(path)]) == 0
    report = json.loads(path.read_text())
    assert report["pass"] and report["device"] == "cpu"
    assert len(report["identity"]) == 5 * 3 and all(r["pass"] for r in report["identity"])
    assert {r["dtype"] for r in report["identity"]} == {"float32", "bfloat16", "float16"}
    assert len(report["extraction"]) == 5 and all(r["error_over_bound"] <= 1 for r in report["extraction"])
    assert [r["dtype"] for r in report["bridge"]] == ["float32", "bfloat16", "float16"]
