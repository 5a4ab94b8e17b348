"""Amaranth components to Verilog, without the all-zero memory initialisation.

``amaranth.back.verilog.convert`` writes every word of a memory's initial value into the
Verilog: the default 16x16 engine's 6 Mbit activation and output buffers become ``initial``
blocks of 50k lines each that take minutes to convert and to compile. The engines here never
read a word they have not written, so their all-zero initial values are left out and the
simulator's power-on value is used.

Amaranth has no option for that, and the supported route (convert to RTLIL, drop the
``$meminit_v2`` cells, run yosys) spends minutes building the 88 MB RTLIL text first. So the
one place that writes a ``$meminit_v2`` cell, ``rtlil.ModuleEmitter.emit_memory``, is wrapped
for the duration of one conversion, here and nowhere else. Amaranth is pinned exactly in
pyproject.toml, ``check_patch`` refuses an amaranth whose emitter has changed, and
tests/test_hw_emit.py fails when the wrapper no longer removes the zero initialisers or
starts removing non-zero ones.

A non-zero initial value (a ROM: the exit head's weights) is written as the same ``$meminit_v2``
cell, with its DATA formatted straight from the words: amaranth's own emitter makes one net
object per bit (the shipped model's head ROM, 4.6 Mbit, took 23 s of a 45 s conversion). The
test checks that both give the same Verilog.
"""
from __future__ import annotations

import inspect
import threading
from contextlib import contextmanager

import amaranth
from amaranth.back import rtlil, verilog
from amaranth.hdl import _ast, _ir, _nir
from amaranth.lib import wiring

from model.errors import QexitError

AMARANTH_VERSION = "0.5.10"     # the version this patch was checked against (pinned in pyproject.toml)
_LOCK = threading.Lock()


def check_patch() -> None:
    """Raise unless amaranth's memory emitter is the one this module wraps."""
    emit = getattr(getattr(rtlil, "ModuleEmitter", None), "emit_memory", None)
    ok = (amaranth.__version__ == AMARANTH_VERSION and emit is not None
          and list(inspect.signature(emit).parameters) == ["self", "cell_idx", "cell"]
          and "$meminit_v2" in inspect.getsource(emit))
    if not ok:
        raise QexitError(f"amaranth {amaranth.__version__} is installed, but hw/rtl/emit.py was checked "
                         f"against {AMARANTH_VERSION}; run `make setup` (or pip install "
                         f"amaranth=={AMARANTH_VERSION})")


@contextmanager
def _skip_zero_memory_init():
    check_patch()
    original = rtlil.ModuleEmitter.emit_memory

    def emit_memory(self, cell_idx, cell):
        if any(cell.init):
            _emit_init(self, cell_idx, cell)

    with _LOCK:
        rtlil.ModuleEmitter.emit_memory = emit_memory
        try:
            yield
        finally:
            rtlil.ModuleEmitter.emit_memory = original


def _emit_init(self, cell_idx, cell) -> None:
    """amaranth's ``emit_memory``, with DATA as one constant sigspec built from the words
    (word 0 in the low bits, most significant bit first, as ``sigspec`` writes constants)."""

    w = cell.width
    bits = "".join(format(row & ((1 << w) - 1), f"0{w}b") for row in reversed(cell.init))
    self.builder.cell("$meminit_v2", ports={
        "ADDR": self.sigspec(),
        "DATA": f"{len(bits)}'{bits}",
        "EN": self.sigspec(_nir.Value.ones(w)),
    }, parameters={
        "MEMID": self.memories[cell_idx].memid,
        "ABITS": 0,
        "WIDTH": w,
        "WORDS": cell.depth,
        "PRIORITY": 0,
    }, src_loc=cell.src_loc)


def to_verilog(component, name: str) -> str:
    """``component`` (a ``wiring.Component``) as one Verilog file with top module ``name``."""
    with _skip_zero_memory_init():
        return verilog.convert(component, name=name, emit_src=False)


def storage_bits(component) -> dict[str, dict[str, int]]:
    """Every bit ``component`` stores, from its elaborated netlist: ``{"memory": {block: bits},
    "registers": {block: bits}}``, a block being the top-level submodule that holds it ("" for
    the top's own registers; a memory of the top's is a block of its own name). Memories count
    depth x width, registers every flip-flop bit. The ports are declared as
    ``amaranth.back.rtlil.convert`` declares a component's."""
    ports = {}
    for path, member, value in component.signature.flatten(component):
        value = value.as_value() if isinstance(value, _ast.ValueCastable) else value
        ports["__".join(map(str, path))] = (value, _ir.PortDirection.Input if member.flow == wiring.In
                                            else _ir.PortDirection.Output)
    netlist = _ir.build_netlist(_ir.Fragment.get(component, None), ports=ports)
    out = {"memory": {}, "registers": {}}
    for cell in netlist.cells:
        path = netlist.modules[cell.module_idx].name[1:]
        if isinstance(cell, _nir.Memory):              # a memory's cell sits in its parent's module
            kind, bits, path = "memory", cell.width * cell.depth, path + (cell.name,)
        elif isinstance(cell, _nir.FlipFlop):
            kind, bits = "registers", len(cell.data)
        else:
            continue
        key = path[0].split("$")[0] if path else ""
        out[kind][key] = out[kind].get(key, 0) + bits
    return out
