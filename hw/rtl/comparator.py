"""The exit comparator: after each candidate layer, exit or continue.

Per decision the exit head streams its class scores into ``inp``, one per beat; the last beat
(``last``) also carries the gate's pre-activation ``gate`` and the ``layer`` it belongs to.
The comparator keeps the running arg-max of the scores (the first index on ties, as
``torch.argmax``), and on the last beat compares the gate with that layer's threshold
register. Since σ(z) ≥ τ ⇔ z ≥ logit(τ), the register holds logit(τ) in the gate's own fixed
point, and no sigmoid is needed. The pathological-pruning mask is applied as the layer's
``candidate`` bit. The decision leaves on ``out``:

* ``exit``: candidate and gate >= threshold;
* ``cls``: the top-1 class;
* ``layer``.

``stop`` is high in the cycle a decision with ``exit`` set is taken: the layer sequencer ends
the image there. ``model.exits.decision.decide`` is the reference.

The threshold registers are a memory of ``max_layers`` words (threshold int32, candidate),
written through ``th_in`` in layer order from ``th_rewind`` on (a pulse sets the write pointer
to layer 0); the pointer also wraps after ``layers`` words. Widths: scores and the gate are int32 (``SCORE_BITS``,
``GATE_BITS``), and the comparison is signed.

Timing: one score per cycle. A decision leaves 2 cycles after its last beat (the threshold
read, then the output register), under the stall rule of ``hw.rtl.units.Pipeline``: the input
waits only while a decision is held.
"""
from __future__ import annotations

from amaranth import Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from model.errors import QexitError

SCORE_BITS = 32
GATE_BITS = 32
LAYER_BITS = 8
CLASS_BITS = 15

INP = data.StructLayout({"score": signed(SCORE_BITS), "gate": signed(GATE_BITS), "layer": unsigned(LAYER_BITS),
                         "last": 1})
OUT = data.StructLayout({"exit": 1, "cls": unsigned(CLASS_BITS), "layer": unsigned(LAYER_BITS)})
THRESHOLD = data.StructLayout({"threshold": signed(GATE_BITS), "candidate": 1})


class ExitComparator(wiring.Component):
    LATENCY = 2

    def __init__(self, max_layers: int = 64):
        if not isinstance(max_layers, int) or not 1 <= max_layers <= 2 ** LAYER_BITS:
            raise QexitError(f"comparator max_layers = {max_layers} must be in [1, {2 ** LAYER_BITS}]")
        self.max_layers = max_layers
        super().__init__({
            "inp": In(stream.Signature(INP)),
            "out": Out(stream.Signature(OUT)),
            "th_in": In(stream.Signature(THRESHOLD)),
            "layers": In(range(max_layers + 1)),
            "th_rewind": In(1),
            "stop": Out(1),
        })

    def elaborate(self, platform):
        m = Module()
        m.submodules.th = th = memory.Memory(shape=THRESHOLD, depth=self.max_layers, init=[])
        th_wr, th_rd = th.write_port(), th.read_port()

        # threshold registers, written in layer order
        ptr = Signal(range(self.max_layers))
        m.d.comb += [self.th_in.ready.eq(1), th_wr.en.eq(self.th_in.valid), th_wr.addr.eq(ptr),
                     th_wr.data.eq(self.th_in.payload)]
        with m.If(self.th_in.valid):
            m.d.sync += ptr.eq(Mux(ptr == self.layers - 1, 0, ptr + 1))
        with m.If(self.th_rewind):
            m.d.sync += ptr.eq(0)

        # running arg-max over one decision's scores
        beat = self.inp.payload
        idx = Signal(CLASS_BITS)
        best = Signal(signed(SCORE_BITS))
        best_idx = Signal(CLASS_BITS)
        better = (idx == 0) | (beat.score > best)
        cls_now = Mux(better, idx, best_idx)

        # stage A: the last beat's decision inputs; stage B: the output register
        a_valid = Signal()
        a_gate = Signal(signed(GATE_BITS))
        a_cls = Signal(CLASS_BITS)
        a_layer = Signal(LAYER_BITS)
        advance = ~self.out.valid | self.out.ready
        take = self.inp.valid & self.inp.ready
        closing = take & beat.last
        m.d.comb += [self.inp.ready.eq(~a_valid | advance), th_rd.addr.eq(beat.layer), th_rd.en.eq(closing)]
        with m.If(take):
            m.d.sync += [idx.eq(Mux(beat.last, 0, idx + 1)), best.eq(Mux(better, beat.score, best)),
                         best_idx.eq(cls_now)]
        with m.If(advance):
            m.d.sync += [self.out.valid.eq(a_valid),
                         self.out.payload.exit.eq(th_rd.data.candidate & (a_gate >= th_rd.data.threshold)),
                         self.out.payload.cls.eq(a_cls), self.out.payload.layer.eq(a_layer)]
            m.d.sync += a_valid.eq(0)
        with m.If(closing):
            m.d.sync += [a_valid.eq(1), a_gate.eq(beat.gate), a_cls.eq(cls_now), a_layer.eq(beat.layer)]
        m.d.comb += self.stop.eq(self.out.valid & self.out.ready & self.out.payload.exit)
        return m
