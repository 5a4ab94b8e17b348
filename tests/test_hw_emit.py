"""hw/rtl/emit.py: the confined patch of amaranth's memory emitter still does exactly its job."""
import pytest
from amaranth import Module, signed
from amaranth.back import rtlil, verilog
from amaranth.lib import memory, wiring
from amaranth.lib.wiring import In, Out

from hw.rtl import emit
from model.errors import QexitError


class TwoMemories(wiring.Component):
    addr: In(4)
    zero_out: Out(8)
    table_out: Out(8)

    def elaborate(self, platform):
        m = Module()
        m.submodules.zeros = zeros = memory.Memory(shape=8, depth=16, init=[])
        m.submodules.table = table = memory.Memory(shape=8, depth=16, init=[3, 1, 4, 1, 5, 9, 2, 6])
        wr = zeros.write_port()
        rd_z, rd_t = zeros.read_port(), table.read_port()
        m.d.comb += [wr.addr.eq(self.addr), wr.data.eq(self.addr), wr.en.eq(1),
                     rd_z.addr.eq(self.addr), rd_t.addr.eq(self.addr),
                     self.zero_out.eq(rd_z.data), self.table_out.eq(rd_t.data)]
        return m


def test_patch_applies_to_the_pinned_amaranth_only(monkeypatch):
    """The pinned amaranth passes the check; another version, or an emitter without the
    ``$meminit_v2`` cell it wraps, is refused with the fix."""
    emit.check_patch()
    monkeypatch.setattr(emit.amaranth, "__version__", "0.6.0")
    with pytest.raises(QexitError, match="amaranth 0.6.0 is installed.*make setup"):
        emit.check_patch()
    monkeypatch.undo()

    def emit_memory(self, cell_idx, cell):      # the same signature, but another body
        return None
    monkeypatch.setattr(emit.rtlil.ModuleEmitter, "emit_memory", emit_memory)
    with pytest.raises(QexitError, match="checked against"):
        emit.check_patch()


def test_zero_init_is_dropped_and_other_init_kept():
    plain = verilog.convert(TwoMemories(), name="two", emit_src=False)
    assert "zeros[0] = 8'h00;" in plain             # amaranth itself initialises both memories
    text = emit.to_verilog(TwoMemories(), "two")
    assert "reg [7:0] zeros [15:0];" in text and "zeros[addr] <=" in text
    assert "zeros[0] =" not in text                 # no initial block for the all-zero memory
    assert "\\table [5] = 8'h09;" in text            # the table keeps its values


def test_nonzero_init_is_written_as_amaranth_writes_it():
    """The fast initialiser gives amaranth's Verilog, word for word (negative and wide words too)."""
    class Rom(wiring.Component):
        addr: In(3)
        out: Out(signed(40))

        def elaborate(self, platform):
            m = Module()
            m.submodules.rom = rom = memory.Memory(shape=signed(40), depth=8, init=[-1, 2 ** 39 - 1, -2 ** 39, 7, 0, -5])
            rd = rom.read_port(domain="comb")
            m.d.comb += [rd.addr.eq(self.addr), self.out.eq(rd.data)]
            return m

    assert emit.to_verilog(Rom(), "rom") == verilog.convert(Rom(), name="rom", emit_src=False)


def test_emitter_is_restored_after_conversion():
    before = rtlil.ModuleEmitter.emit_memory
    assert "module two" in emit.to_verilog(TwoMemories(), "two")
    assert rtlil.ModuleEmitter.emit_memory is before


def test_other_amaranth_version_is_refused(monkeypatch):
    monkeypatch.setattr(emit.amaranth, "__version__", "0.5.99")
    with pytest.raises(QexitError, match="make setup"):
        emit.check_patch()


def test_storage_bits_counts_every_memory_and_register_by_block():
    """A 8-word x 40-bit ROM in block ``rom``, a 6-bit register in the top, a 3-bit one in ``inner``."""
    class Inner(wiring.Component):
        x: In(3)
        y: Out(3)

        def elaborate(self, platform):
            m = Module()
            m.d.sync += self.y.eq(self.x)
            return m

    class Top(wiring.Component):
        addr: In(3)
        out: Out(signed(40))
        count: Out(6)

        def elaborate(self, platform):
            m = Module()
            m.submodules.rom = rom = memory.Memory(shape=signed(40), depth=8, init=[1, 2])
            m.submodules.inner = inner = Inner()
            rd = rom.read_port(domain="comb")
            m.d.comb += [rd.addr.eq(self.addr), self.out.eq(rd.data), inner.x.eq(self.addr)]
            m.d.sync += self.count.eq(self.count + inner.y)
            return m

    assert emit.storage_bits(Top()) == {"memory": {"rom": 320}, "registers": {"": 6, "inner": 3}}
