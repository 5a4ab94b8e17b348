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
"""
from __future__ import annotations

import inspect
import threading
from contextlib import contextmanager

import amaranth
from amaranth.back import rtlil, verilog

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
        raise QexitError(f"amaranth {amaranth.__version__} is installed, but hw/emit.py was checked "
                         f"against {AMARANTH_VERSION}; run `make setup` (or pip install "
                         f"amaranth=={AMARANTH_VERSION})")


@contextmanager
def _skip_zero_memory_init():
    check_patch()
    original = rtlil.ModuleEmitter.emit_memory

    def emit_memory(self, cell_idx, cell):
        if any(cell.init):
            original(self, cell_idx, cell)

    with _LOCK:
        rtlil.ModuleEmitter.emit_memory = emit_memory
        try:
            yield
        finally:
            rtlil.ModuleEmitter.emit_memory = original


def to_verilog(component, name: str) -> str:
    """``component`` (a ``wiring.Component``) as one Verilog file with top module ``name``."""
    with _skip_zero_memory_init():
        return verilog.convert(component, name=name, emit_src=False)
