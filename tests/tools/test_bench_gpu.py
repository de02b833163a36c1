"""tools/bench_gpu.py: the quick CPU configuration gives every section, a failure is recorded."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tools import bench_gpu, bench_gpu_sections

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "tools" / "bench_gpu.py"


def positive(x) -> bool:
    return isinstance(x, float) and math.isfinite(x) and x > 0


def test_quick_run_measures_every_section(tmp_path, capsys):
    out = tmp_path / "new" / "b.json"
    assert bench_gpu.main(["--quick", "--device", "cpu", "--json", str(out)]) == 0
    assert [p.name for p in out.parent.iterdir()] == ["b.json"]  # no temp file left
    data = json.loads(out.read_text())
    s = data["sections"]
    assert list(s) == list(bench_gpu_sections.SECTIONS) and data["failed"] == []
    assert data["device"] == "cpu" and data["torch"] and data["date"]

    assert positive(s["matmul"]["seconds"]) and positive(s["matmul"]["tflops"])

    rows = s["encoder"]["rows"]
    assert {r["input_size"] for r in rows} == {224, "native"}
    assert {4, 8, "auto"} <= {r["chunk"] for r in rows}
    for row in rows:
        assert positive(row["seconds"]) and positive(row["slices_per_s"])
        assert positive(row["gflop_per_slice"]) and 0 < row["fraction_of_peak"] < 1.5
    assert s["encoder"]["fused_attn"] == {"vit_test_patch14_dinov2": True}

    model = s["model"]
    for mode in ("cached", "naive", "cached_stacked"):
        assert positive(model[mode]["seconds"]) and positive(model[mode]["peak_mb"])
    assert model["naive_over_cached"] > 0 and model["overlap"] == 0.5

    for peer in ("swinunetr", "dynunet"):
        p = s["peers"][peer]
        assert positive(p["seconds"]) and positive(p["peak_mb"])
        assert p["seconds_over_volseg"] > 0 and p["memory_over_volseg"] > 0
    assert s["peers"]["scaled_down"] is True
    assert s["peers"]["dynunet"]["config"]["strides"] == bench_gpu_sections.NNUNET_STRIDES

    steps = s["predict"]["steps"]
    assert list(steps) == ["read", "preprocess", "encode", "head", "postprocess"]
    assert all(positive(v) for v in steps.values()) and positive(s["predict"]["seconds"])

    assert s["large"] is None  # GPU only
    table = capsys.readouterr().out
    assert "6. large volume peak memory: skipped (no GPU)" in table
    assert "naive/cached time" in table and "ERROR" not in table


def test_a_failing_section_is_recorded_and_the_rest_still_run(tmp_path, monkeypatch, capsys):
    def boom(*_args):
        raise RuntimeError("CUDA out of memory (pretend)")

    monkeypatch.setitem(bench_gpu_sections.SECTIONS, "matmul", boom)
    out = tmp_path / "b.json"
    argv = ["--quick", "--device", "cpu", "--json", str(out), "--sections", "encoder,matmul"]
    assert bench_gpu.main(argv) == 1
    data = json.loads(out.read_text())
    assert data["failed"] == ["matmul"]
    assert data["sections"]["matmul"] == {"error": "RuntimeError: CUDA out of memory (pretend)"}
    rows = data["sections"]["encoder"]["rows"]
    assert rows and all(positive(r["seconds"]) for r in rows)
    assert all(r["fraction_of_peak"] is None for r in rows)  # no peak measured
    assert "1. matrix peak: ERROR RuntimeError: CUDA out of memory" in capsys.readouterr().out


def test_large_volume_rows_run_on_the_cpu_too():
    """Section 6 is GPU-only in the tool; its body runs anywhere, with logits on the CPU."""
    vit = bench_gpu_sections.TEST_VIT
    scale = replace(bench_gpu.QUICK, large_shape=(32, 32, 40), large_encoders=(vit,))
    out = bench_gpu_sections.large_volume(scale, torch.device("cpu"))
    assert out["shape"] == [32, 32, 40] and positive(out["input_mb"])
    (row,) = out["rows"]
    assert row["encoder"] == vit and row["stitch_device"] == "cpu" and row["roi_slices"] == 16
    assert positive(row["seconds"]) and positive(row["peak_mb"])
    assert any("6. large" in line for line in bench_gpu.render("large", out))


def test_unknown_section_is_refused():
    with pytest.raises(SystemExit) as exit_info:
        bench_gpu.main(["--sections", "matmul,warp_drive"])
    assert exit_info.value.code == 2


def test_help_runs_as_a_script():
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "--sections" in result.stdout and "--quick" in result.stdout
