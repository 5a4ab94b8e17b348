"""The GEMM engine with a simulation model of its external memory: what the testbenches run.

The weights of a real accelerator come from DRAM; in simulation they come from
``WeightMemory``, an HDL model, so that cocotb only loads memories and waits for ``done``
(no Python runs per cycle while the engine computes). The model holds the weight words of
one GEMM and offers them on the engine's ``w_in`` in order, word k from the cycle
``hw.schedule.WeightSource.available(k)`` on, with integer arithmetic:

* bandwidth B = ``bw_num / bw_den`` bytes/cycle, first-word latency L = ``latency``;
* at cycle t (0 = the first cycle after ``start`` is sampled) ``credit = max(0, t - L + 1) * bw_num``
  bytes (times ``bw_den``) have arrived, and word k (C bytes) is offered when
  ``credit >= (k + 1) * C * bw_den``, which is t >= L + ceil((k + 1) C / B) - 1;
* ``ideal``: every word from cycle L on (``WeightSource(None, L)``);
* ``stall_seed`` != 0: a 32-bit LFSR also drops ``valid`` in about 30% of the cycles, for
  correctness runs whose cycles are not predicted.

So the cycle model and this memory model are one definition written twice, in Python and in
HDL, and every cycle-exact run checks that they agree. ``GemmHarness`` is the engine plus the
model; its ports are the engine's, except that ``w_in`` is replaced by ``w_load`` (fills the
model's memory while the engine is idle, from address 0 after every ``start``) and the model's
settings above.
"""
from __future__ import annotations

from fractions import Fraction

from amaranth import Module, Mux, Signal, unsigned
from amaranth.lib import memory, stream, wiring
from amaranth.lib.wiring import In

from hw import emit
from hw.gemm import GemmConfig, GemmEngine, engine_ports
from hw.schedule import WeightSource

STALL_THRESHOLD = 5        # valid is dropped when the LFSR's low 4 bits are below this (5/16)


def source_ports(source: WeightSource, stall_seed: int = 0) -> dict[str, int]:
    """The harness's memory-model settings for ``source``."""
    if source.bandwidth is None:
        num, den = 1, 1
    else:
        frac = Fraction(str(source.bandwidth))
        num, den = frac.numerator, frac.denominator
    return {"ideal": int(source.bandwidth is None), "bw_num": num, "bw_den": den,
            "latency": source.latency, "stall_seed": stall_seed}


class GemmHarness(wiring.Component):
    def __init__(self, cfg: GemmConfig):
        self.cfg = cfg
        self.words = cfg.kt_max * cfg.nt_max * cfg.rows          # the largest GEMM's weight rows
        ports = {name: port for name, port in engine_ports(cfg).items() if name != "w_in"}
        super().__init__({
            **ports,
            "w_load": In(stream.Signature(unsigned(8 * cfg.cols))),
            "ideal": In(1), "bw_num": In(32), "bw_den": In(32), "latency": In(32), "stall_seed": In(32),
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        m.submodules.engine = eng = GemmEngine(cfg)
        for port in ("a_in", "p_in", "tb_in"):
            wiring.connect(m, wiring.flipped(getattr(self, port)), getattr(eng, port))
        for port in ("out", "raw_out"):
            wiring.connect(m, getattr(eng, port), wiring.flipped(getattr(self, port)))
        m.d.comb += [eng.m.eq(self.m), eng.k.eq(self.k), eng.n.eq(self.n), eng.raw.eq(self.raw), eng.token_bias.eq(self.token_bias),
                     eng.start.eq(self.start),
                     self.busy.eq(eng.busy), self.done.eq(eng.done), self.cycles.eq(eng.cycles)]

        m.submodules.weights = mem = memory.Memory(shape=unsigned(8 * cfg.cols), depth=self.words, init=[])
        wr, rd = mem.write_port(), mem.read_port(domain="comb")
        started = self.start & ~eng.busy                 # the edge the engine samples start on
        load_ptr = Signal(range(self.words + 1))
        m.d.comb += [self.w_load.ready.eq(~eng.busy), wr.en.eq(self.w_load.valid & ~eng.busy),
                     wr.addr.eq(load_ptr), wr.data.eq(self.w_load.payload)]
        with m.If(self.w_load.valid & ~eng.busy):
            m.d.sync += load_ptr.eq(load_ptr + 1)

        t = Signal(32)                                   # cycles since start
        word = Signal(range(self.words + 1))             # the next word to offer
        credit = Signal(64)                              # bytes arrived, times bw_den ... times bw_num
        need = Signal(64)                                # (word + 1) * C * bw_den
        lfsr = Signal(32)
        step = Signal(64)
        m.d.comb += step.eq(cfg.cols * self.bw_den)
        stall = (self.stall_seed != 0) & (lfsr[:4] < STALL_THRESHOLD)
        arrived = Mux(self.ideal, t >= self.latency, credit >= need)
        offer = eng.busy & (word < self.words) & arrived & ~stall
        m.d.comb += [eng.w_in.valid.eq(offer), rd.addr.eq(word), eng.w_in.payload.eq(rd.data)]
        m.d.sync += [t.eq(t + 1), credit.eq(credit + Mux(t + 1 >= self.latency, self.bw_num, 0)),
                     lfsr.eq(Mux(lfsr[0], (lfsr >> 1) ^ 0x80200003, lfsr >> 1))]
        with m.If(offer & eng.w_in.ready):
            m.d.sync += [word.eq(word + 1), need.eq(need + step)]
        with m.If(started):
            m.d.sync += [t.eq(0), credit.eq(Mux(self.latency == 0, self.bw_num, 0)), word.eq(0),
                         need.eq(step), lfsr.eq(self.stall_seed), load_ptr.eq(0)]
        return m


def top_name(cfg: GemmConfig) -> str:
    return f"{cfg.name}_harness"


def to_verilog(cfg: GemmConfig) -> str:
    """The harness as one Verilog file, top module ``top_name(cfg)``."""
    return emit.to_verilog(GemmHarness(cfg), top_name(cfg))
