"""The GEMM engine and the layer engine with simulation models of their external memory: what
the testbenches run (``GemmHarness``, and ``LayerHarness`` at the end of this module).

The weights of a real accelerator come from DRAM; in simulation they come from
``WeightMemory``, an HDL model, so that cocotb only loads memories and waits for ``done``
(no Python runs per cycle while the engine computes). The model holds the weight words of
one GEMM and offers them on the engine's ``w_in`` in order, word k from the cycle
``hw.cost.schedule.WeightSource.available(k)`` on, with integer arithmetic:

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

from amaranth import ClockDomain, ClockSignal, DomainRenamer, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.cost import Machine
from hw.cost.schedule import WeightSource
from hw.rtl import axi, comparator, emit
from hw.rtl.accelerator import csr_signature
from hw.rtl.gemm import GemmConfig, GemmEngine, engine_ports
from hw.rtl.layer import LayerEngine
from model.errors import QexitError

STALL_THRESHOLD = 5        # valid is dropped when the LFSR's low 4 bits are below this (5/16)


def check_machine(machine: Machine, square: bool = False) -> Machine:
    """``machine`` if the RTL can run it: int8 PEs (precision-scalable PEs are priced by the cost
    model, not built into an engine), and with ``square`` an R x R array (the layer engine)."""
    if machine.scalable:
        raise QexitError("the engines' PEs are int8: a precision-scalable machine is a cost model only")
    if square and machine.rows != machine.cols:
        raise QexitError(f"the layer engine needs a square array (--rows {machine.rows} --cols {machine.cols})")
    return machine


def source_ports(source: WeightSource, stall_seed: int = 0) -> dict[str, int]:
    """The harness's memory-model settings for ``source``."""
    if source.bandwidth is None:
        num, den = 1, 1
    else:
        frac = Fraction(str(source.bandwidth))
        num, den = frac.numerator, frac.denominator
    return {"ideal": int(source.bandwidth is None), "bw_num": num, "bw_den": den,
            "latency": source.latency, "stall_seed": stall_seed}


class WeightMemory(wiring.Component):
    """The external memory model: ``words`` words of ``width`` bits, written through ``load``
    (from address 0 after every ``rewind``) and offered on ``out`` in order while ``active``,
    word k from cycle ``WeightSource.available(k)`` after the last ``restart`` (the timing of
    the module docstring). ``restart`` starts a burst: the time and the byte credit begin
    again, and the word pointer goes on (the next GEMM's weights follow the last one's)."""

    def __init__(self, words: int, width: int):
        self.words = words
        super().__init__({"load": In(stream.Signature(unsigned(width))), "out": Out(stream.Signature(unsigned(width))),
                          "active": In(1), "restart": In(1), "rewind": In(1), "word_bytes": In(16),
                          "ideal": In(1), "bw_num": In(32), "bw_den": In(32), "latency": In(32), "stall_seed": In(32)})

    def elaborate(self, platform):
        m = Module()
        m.submodules.mem = mem = memory.Memory(shape=self.load.payload.shape(), depth=self.words, init=[])
        wr, rd = mem.write_port(), mem.read_port(domain="comb")
        load_ptr = Signal(range(self.words + 1))
        m.d.comb += [self.load.ready.eq(~self.active), wr.en.eq(self.load.valid & ~self.active),
                     wr.addr.eq(load_ptr), wr.data.eq(self.load.payload)]
        with m.If(self.load.valid & ~self.active):
            m.d.sync += load_ptr.eq(load_ptr + 1)

        t = Signal(32)                                   # cycles since restart
        word = Signal(range(self.words + 1))             # the next word to offer
        credit = Signal(64)                              # bytes arrived, times bw_den ... times bw_num
        need = Signal(64)                                # (words offered in this burst + 1) * bytes * bw_den
        lfsr = Signal(32)
        step = Signal(64)
        m.d.comb += step.eq(self.word_bytes * self.bw_den)
        stall = (self.stall_seed != 0) & (lfsr[:4] < STALL_THRESHOLD)
        arrived = Mux(self.ideal, t >= self.latency, credit >= need)
        offer = self.active & (word < self.words) & arrived & ~stall
        m.d.comb += [self.out.valid.eq(offer), rd.addr.eq(word), self.out.payload.eq(rd.data)]
        m.d.sync += [t.eq(t + 1), credit.eq(credit + Mux(t + 1 >= self.latency, self.bw_num, 0)),
                     lfsr.eq(Mux(lfsr[0], (lfsr >> 1) ^ 0x80200003, lfsr >> 1))]
        with m.If(offer & self.out.ready):
            m.d.sync += [word.eq(word + 1), need.eq(need + step)]
        with m.If(self.restart):
            m.d.sync += [t.eq(0), credit.eq(Mux(self.latency == 0, self.bw_num, 0)),
                         need.eq(step), lfsr.eq(self.stall_seed)]
        with m.If(self.rewind):
            m.d.sync += [word.eq(0), load_ptr.eq(0)]
        return m


MODEL_PORTS = ("ideal", "bw_num", "bw_den", "latency", "stall_seed")


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
        m.submodules.weights = mem = WeightMemory(self.words, 8 * cfg.cols)
        started = self.start & ~eng.busy                 # the edge the engine samples start on
        wiring.connect(m, wiring.flipped(self.w_load), mem.load)
        wiring.connect(m, mem.out, eng.w_in)
        m.d.comb += [mem.active.eq(eng.busy), mem.restart.eq(started), mem.rewind.eq(started),
                     mem.word_bytes.eq(cfg.cols)] + [getattr(mem, p).eq(getattr(self, p)) for p in MODEL_PORTS]
        return m


def top_name(cfg: GemmConfig) -> str:
    return f"{cfg.name}_harness"


def to_verilog(cfg: GemmConfig) -> str:
    """The harness as one Verilog file, top module ``top_name(cfg)``."""
    return emit.to_verilog(GemmHarness(cfg), top_name(cfg))


class LayerHarness(wiring.Component):
    """The layer engine with its external memories: the weight stream (``WeightMemory``, timed
    by the memory-model ports, restarted at every GEMM), the parameter stream (a second
    ``WeightMemory`` that always has the next word) and a trace memory that takes every word
    the program sends to the host (``out``), read back after ``done`` through ``t_addr`` and
    ``t_data`` (``t_count`` words since ``start``). The memories are loaded while the engine is
    idle, from address 0 after every ``start``."""

    def __init__(self, cfg, weight_words: int, param_words: int, trace_words: int, extra: dict | None = None):
        self.cfg = cfg
        self.engine = LayerEngine(cfg)
        self.sizes = (weight_words, param_words, trace_words)
        L = cfg.lanes
        eng_ports = self.engine.signature.members
        super().__init__({**(extra or {}),
            "prog_in": eng_ports["prog_in"], "s_in": eng_ports["s_in"],
            "w_load": In(stream.Signature(unsigned(8 * L))), "q_load": In(stream.Signature(unsigned(cfg.bus_bits))),
            "pc": eng_ports["pc"], "at": eng_ports["at"], "start": In(1), "busy": Out(1), "done": Out(1), "cycles": Out(32),
            "t_addr": In(range(trace_words)), "t_data": Out(32 * L), "t_count": Out(range(trace_words + 1)),
            **{p: In(32) for p in MODEL_PORTS},
        })

    def elaborate(self, platform):
        m = Module()
        cfg = self.cfg
        weight_words, param_words, trace_words = self.sizes
        m.submodules.engine = eng = self.engine
        for port in ("prog_in", "s_in"):
            wiring.connect(m, wiring.flipped(getattr(self, port)), getattr(eng, port))
        started = self.start & ~eng.busy
        m.d.comb += [eng.pc.eq(self.pc), self.at.eq(eng.at), eng.start.eq(self.start), self.busy.eq(eng.busy),
                     self.done.eq(eng.done), self.cycles.eq(eng.cycles)]
        m.submodules.weights = wm = WeightMemory(weight_words, 8 * cfg.lanes)
        m.submodules.params = pm = WeightMemory(param_words, cfg.bus_bits)
        wiring.connect(m, wiring.flipped(self.w_load), wm.load)
        wiring.connect(m, wiring.flipped(self.q_load), pm.load)
        wiring.connect(m, wm.out, eng.w_in)
        wiring.connect(m, pm.out, eng.q_in)
        m.d.comb += [wm.active.eq(eng.busy), wm.restart.eq(eng.gemm_start), wm.rewind.eq(started),
                     wm.word_bytes.eq(cfg.lanes)] + [getattr(wm, p).eq(getattr(self, p)) for p in MODEL_PORTS]
        m.d.comb += [pm.active.eq(eng.busy), pm.restart.eq(started), pm.rewind.eq(started),
                     pm.word_bytes.eq(1), pm.ideal.eq(1), pm.latency.eq(0)]

        m.submodules.trace = tr = memory.Memory(shape=unsigned(32 * cfg.lanes), depth=trace_words, init=[])
        t_wr, t_rd = tr.write_port(), tr.read_port(domain="comb")
        ptr = Signal(range(trace_words + 1))
        m.d.comb += [eng.out.ready.eq(1), t_wr.en.eq(eng.out.valid), t_wr.addr.eq(ptr), t_wr.data.eq(eng.out.payload),
                     t_rd.addr.eq(self.t_addr), self.t_data.eq(t_rd.data), self.t_count.eq(ptr)]
        with m.If(eng.out.valid):
            m.d.sync += ptr.eq(ptr + 1)
        with m.If(started):
            m.d.sync += ptr.eq(0)
        return m


def layer_top_name(cfg) -> str:
    return f"{cfg.name}_harness"


class AxiMemory(wiring.Component):
    """The accelerator's external memory in simulation: ``words`` words of ``data_bits``,
    an AXI4 subordinate on both ports, timed like ``WeightMemory``.

    Reads: AR is taken whenever the queue of ``axi.MAX_OUTSTANDING`` bursts has room; the
    bursts are served in order, one beat a cycle at most. A burst that finds the memory idle
    (no burst being served, none queued) restarts the timing: beat j of the bursts that follow
    back to back is offered from cycle ``WeightSource(bandwidth, latency).available(j,
    data_bits / 8)`` after the AR (0 = the first cycle after it is taken). So a fetch whose
    bursts are queued before the previous one ends pays the first-word latency once.
    Writes: AW and W are taken at once (one beat a cycle), B follows the last beat.
    The host port: ``load`` writes a word while the accelerator is stopped, ``peek_addr`` /
    ``peek_data`` read one (combinational). ``hang_after`` != 0: the memory stops answering
    after that many read beats (to check the accelerator's watchdog)."""

    def __init__(self, words: int, data_bits: int):
        self.words, self.data_bits = words, data_bits
        super().__init__({
            "rd": In(axi.read_port(data_bits)), "wr": In(axi.write_port(data_bits)),
            "load": In(stream.Signature(data.StructLayout({"addr": range(words), "data": data_bits}))),
            "peek_addr": In(range(words)), "peek_data": Out(data_bits),
            "ideal": In(1), "bw_num": In(32), "bw_den": In(32), "latency": In(32), "hang_after": In(32)})

    def elaborate(self, platform):
        m = Module()
        DW = self.data_bits
        shift = (DW // 8).bit_length() - 1
        m.submodules.mem = mem = memory.Memory(shape=unsigned(DW), depth=self.words, init=[])
        rd_port, peek = mem.read_port(domain="comb"), mem.read_port(domain="comb")
        wr_port = mem.write_port()
        m.d.comb += [peek.addr.eq(self.peek_addr), self.peek_data.eq(peek.data)]

        # ---- reads
        rd = self.rd
        burst = data.StructLayout({"addr": range(self.words), "len": 9})
        m.submodules.queue = q = fifo.SyncFIFO(width=burst.size, depth=axi.MAX_OUTSTANDING)
        active = Signal()
        addr = Signal(range(self.words))
        left = Signal(9)
        t = Signal(32)
        credit = Signal(64)
        need = Signal(64)
        step = (DW // 8) * self.bw_den
        arrived = Mux(self.ideal, t >= self.latency, credit >= need)
        served = Signal(32)                       # beats served since reset (``hang_after``: a memory that stops)
        hung = (self.hang_after != 0) & (served >= self.hang_after)
        with m.If(rd.rvalid & rd.rready):
            m.d.sync += served.eq(served + 1)
        m.d.comb += [rd.arready.eq(q.w_rdy), rd.rvalid.eq(active & arrived & ~hung), rd.rdata.eq(rd_port.data),
                     rd.rlast.eq(left == 1), rd.rresp.eq(0), rd_port.addr.eq(addr)]
        ar = Signal(burst)
        m.d.comb += [ar.addr.eq(rd.araddr >> shift), ar.len.eq(rd.arlen + 1)]
        ar_take = rd.arvalid & rd.arready
        m.d.sync += [t.eq(t + 1), credit.eq(credit + Mux(t + 1 >= self.latency, self.bw_num, 0))]

        def serve(b, restart):
            m.d.sync += [active.eq(1), addr.eq(b.addr), left.eq(b.len)]
            if restart:
                m.d.sync += [t.eq(0), credit.eq(Mux(self.latency == 0, self.bw_num, 0)), need.eq(step)]

        beat = rd.rvalid & rd.rready
        head = Signal(burst)
        m.d.comb += head.as_value().eq(q.r_data)
        with m.If(beat):
            m.d.sync += [addr.eq(addr + 1), left.eq(left - 1), need.eq(need + step)]
        with m.If(~active | (beat & (left == 1))):
            with m.If(q.r_rdy):                       # the next queued burst, back to back (or after idle)
                m.d.comb += q.r_en.eq(1)
                serve(head, restart=False)
                with m.If(~active):
                    serve(head, restart=True)
            with m.Elif(ar_take & ~active):           # an AR that finds the memory idle
                serve(ar, restart=True)
            with m.Else():
                m.d.sync += active.eq(0)
        # an AR goes into the queue unless it is served at once
        m.d.comb += [q.w_en.eq(ar_take & ~(~active & ~q.r_rdy)), q.w_data.eq(ar.as_value())]

        # ---- writes (and the host's loads while stopped)
        wr = self.wr
        w_addr = Signal(range(self.words))
        w_open = Signal()
        b_pending = Signal()
        m.d.comb += [wr.awready.eq(~w_open & ~b_pending), wr.wready.eq(w_open), wr.bvalid.eq(b_pending),
                     wr.bresp.eq(0)]
        with m.If(wr.awvalid & wr.awready):
            m.d.sync += [w_addr.eq(wr.awaddr >> shift), w_open.eq(1)]
        with m.If(wr.wvalid & wr.wready):
            m.d.comb += [wr_port.en.eq(1), wr_port.addr.eq(w_addr), wr_port.data.eq(wr.wdata)]
            m.d.sync += w_addr.eq(w_addr + 1)
            with m.If(wr.wlast):
                m.d.sync += [w_open.eq(0), b_pending.eq(1)]
        with m.If(b_pending & wr.bready):
            m.d.sync += b_pending.eq(0)
        m.d.comb += self.load.ready.eq(1)
        with m.If(self.load.valid):
            m.d.comb += [wr_port.en.eq(1), wr_port.addr.eq(self.load.payload.addr), wr_port.data.eq(self.load.payload.data)]
        return m


class AcceleratorHarness(wiring.Component):
    """The accelerator (``hw.rtl.accelerator.Accelerator``) with its memory (``AxiMemory``) and
    the host's ports: ``load`` / ``peek`` on the memory, the control bus ``csr`` passed through,
    ``host_writes_busy``: control-bus writes taken while the accelerator was busy, and a trace
    of every decision word the sequencer took since reset (``t_count`` of them, read at
    ``t_addr``; the first ``trace_words`` are kept)."""

    def __init__(self, acc, words: int, trace_words: int = 1 << 14):
        self.acc, self.words, self.trace_words = acc, words, trace_words
        super().__init__({
            "t_addr": In(range(trace_words)), "t_data": Out(comparator.OUT.size), "t_count": Out(32),
            "csr": In(csr_signature()),
            "load": In(stream.Signature(data.StructLayout({"addr": range(words), "data": acc.dw}))),
            "peek_addr": In(range(words)), "peek_data": Out(acc.dw),
            "busy": Out(1), "host_writes_busy": Out(32),
            "ideal": In(1), "bw_num": In(32), "bw_den": In(32), "latency": In(32), "hang_after": In(32)})

    def elaborate(self, platform):
        m = Module()
        # a power-on reset of 3 cycles instead of a reset input: nothing of the run hangs on a
        # top-level input, so Verilator's input-change phase (every clock edge) has no logic to
        # recompute (a reset input made it about 40% of a cycle's time, by perf on the shipped model)
        m.domains.run = run = ClockDomain("run")
        por = Signal(range(4), init=3, reset_less=True)
        with m.If(por != 0):
            m.d.sync += por.eq(por - 1)
        m.d.comb += [run.clk.eq(ClockSignal("sync")), run.rst.eq(por != 0)]
        acc, mem = self.acc, AxiMemory(self.words, self.acc.dw)
        m.submodules.acc = DomainRenamer("run")(acc)
        m.submodules.memory = DomainRenamer("run")(mem)
        wiring.connect(m, acc.mem, mem.rd)
        wiring.connect(m, acc.res, mem.wr)
        wiring.connect(m, wiring.flipped(self.csr), acc.csr)
        wiring.connect(m, wiring.flipped(self.load), mem.load)
        m.d.comb += [mem.peek_addr.eq(self.peek_addr), self.peek_data.eq(mem.peek_data), self.busy.eq(acc.busy)]
        # the host's memory settings, registered (no logic of the run hangs on a top-level input)
        m.d.run += [getattr(mem, p).eq(getattr(self, p)) for p in ("ideal", "bw_num", "bw_den", "latency", "hang_after")]
        with m.If(self.csr.cyc & self.csr.stb & self.csr.we & self.csr.ack & acc.busy):
            m.d.run += self.host_writes_busy.eq(self.host_writes_busy + 1)
        m.submodules.trace = tr = memory.Memory(shape=unsigned(comparator.OUT.size), depth=self.trace_words, init=[])
        t_wr, t_rd = tr.write_port(), tr.read_port(domain="comb")
        m.d.comb += [t_wr.en.eq(acc.dec_valid & (self.t_count < self.trace_words)), t_wr.addr.eq(self.t_count),
                     t_wr.data.eq(acc.dec), t_rd.addr.eq(self.t_addr), self.t_data.eq(t_rd.data)]
        with m.If(acc.dec_valid):
            m.d.run += self.t_count.eq(self.t_count + 1)
        return m
