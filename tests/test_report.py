"""qexit/commands/report.py and qexit/render/report.py: the flow's steps and reports/index.md
with its headline table and plots."""
import json

from qexit.commands import report
from qexit.render.report import table_text


def test_the_flow_runs_synth_before_cost():
    names = [argv[0] if argv[0] != "verify" else f"verify {argv[1]}" for argv in report.steps(False)]
    assert names.index("quantize") < names.index("exits") < names.index("synth") < names.index("cost")
    assert "verify block" in names and "hls" in names and names.index("cost") < names.index("verify run")


def test_index_has_the_headline_table_and_the_plots(tmp_path):
    def put(step, summary, png=None):
        (tmp_path / step).mkdir()
        (tmp_path / step / "summary.json").write_text(json.dumps(summary))
        if png:
            (tmp_path / step / png).write_bytes(b"png")
    put("eval", {"top1": 0.8874})
    put("cost", {"cycles_full": 791584, "cycles_exit": 413585.2, "cycle_saving": 0.4775, "energy_full_pj": 2.48e8,
                 "energy_exit_pj": 1.28e8, "energy_saving": 0.4834, "clock_mhz": 100.0, "latency_us": 4135.9,
                 "throughput_ips": 244.7, "seed": 0, "energy_table": {"name": "horowitz_45nm", "kind": "45 nm ASIC", "label": "Horowitz 45 nm ASIC"},
                 "dram_share_full": 0.75, "dram_share_exit": 0.7, "clock_source": "user"}, "cost.png")
    put("synth", {"device": "LFE5U-85F", "rows": None, "fmax_mhz": None, "designs": [{"available": {"dsps": 156}}],
                  "accelerator": [{"rows": 4, "cols": 4, "fits": False, "dsps": 190},
                                  {"rows": 8, "cols": 8, "fits": False, "dsps": 370}]})
    put("verify-gemm", {"matched": 10, "total": 10, "cycles_measured": 5, "cycles_predicted": 5})
    (tmp_path / ".cost.tmp").mkdir()                          # a half-written step is not listed
    rows = report.write_index(tmp_path)
    text = (tmp_path / "index.md").read_text()
    assert ("FP32 top-1", "88.74%", "eval") in rows
    assert "| verify-gemm: bit-exact | 10/10; cycles 5 measured, 5 predicted |" in text
    assert "| energy per image, 45 nm ASIC | 248.0 -> 128.0 uJ (48.34% saved; DRAM 75.00% -> 70.00%) |" in text
    assert "791,584 -> 413,585 (47.75% saved)" in text and "![" in text and "(cost/cost.png)" in text
    assert "pareto.png" not in text and ".cost.tmp" not in text
    assert "| ECP5 LFE5U-85F: no accelerator fits | 4x4 needs 190 DSP; 8x8 needs 370 DSP of 156 |" in text
    assert "latency at 100 MHz (a what-if)" in text
    assert "FP32 top-1" in table_text(rows)
