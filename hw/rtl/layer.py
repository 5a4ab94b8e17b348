"""The layer engine: the GEMM engine, the nonlinear units, an on-chip scratchpad and a
controller that runs a program of descriptors (``hw.program`` writes them, and the cycle model
reads the same list).

The array is square (R = C = L lanes), so a GEMM's output words (C int8 of one token) are the
next GEMM's input words (R int8 of one token): every activation lives in the scratchpad as
words of L int8, one token row after the other.

Datapath of a MOVE descriptor: one source → at most one unit → one destination, all streams:

    source                unit                                     destination
    scratch (2-D reader)  none                                     scratch (2-D writer)
    engine out            activation table (L lanes)               scratch, transposed (one lane a beat)
    engine raw_out        add (L lanes; the scratch reader gives a) engine p_in, tb_in
    param stream          LayerNorm (L lanes, a token row a time)   LayerNorm parameters (L channels)
                                                                    host (the ``out`` port)
                          serializer (one int8 a beat: the K transpose)

A SOFTMAX descriptor starts the softmax side channel: the engine's int32 bank (its second read
port) → the softmax unit → the probability memory (two banks), whose words P·V reads as its
activations. The controller goes on at once, so one head's softmax runs beside the next
head's Q·Kᵀ and the previous head's P·V; a descriptor with ``wait`` set (and every SOFTMAX and
END) starts only once the side channel is idle.

A GEMM descriptor starts the engine with its shape and modes. The engine reads its
activations in place (word a_base + m*a_stride + i) from the scratchpad (its second read port)
or, for P·V (``a_from_p``), from the probability memory,
and its weights come from the external stream (``w_in``) or from the scratch reader
(attention: Kᵀ and V). Descriptors run
one after the other: the controller fetches one (2 cycles), runs it and waits for its end
(a MOVE ends when its destination has taken ``total`` beats, a GEMM when the engine is done).
``hw.cost.timeline.predict`` gives the cycles of each descriptor for this timing.

Ports: ``prog_in`` (program words, written from address 0 after every ``start``), ``s_in``
(address, word) pairs written to the scratchpad while idle, ``w_in`` (external weight
stream), ``q_in`` (external parameter stream), ``out`` (host taps), ``pc`` (first descriptor),
``start``, ``busy``, ``done``, ``cycles`` (start → done), ``gemm_start`` (the engine samples
start in this cycle; the external memory model restarts its timing on it).
"""
from __future__ import annotations


from amaranth import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.rtl import emit
from hw.rtl.gemm import PARAM_BITS, GemmEngine
from hw.rtl.isa import ADDR_BITS, COUNT, Dst, LayerConfig, Op, Src, Unit, desc_layout, pattern_layout
from hw.rtl.layernorm import LN_PARAM, LayerNormUnit
from hw.rtl.softmax import SoftmaxUnit
from hw.rtl.units import AddUnit, GeluUnit, TableUnit


class ScratchReader(wiring.Component):
    """Reads a 2-D pattern from a memory read port as a stream (1 word/cycle sustained). The read
    data is registered before the FIFO (a DP16KD's output is slow unregistered), so a word is in
    flight for two cycles and the FIFO holds ``DEPTH`` = 3: room for both and the one being taken."""

    DEPTH = 3

    def __init__(self, addr_bits: int, width: int, pattern_bits: int | None = None):
        self.addr_bits = pattern_bits or addr_bits         # the descriptors' address width
        super().__init__({"go": In(1), "pat": In(pattern_layout(self.addr_bits)),
                          "addr": Out(addr_bits), "data": In(width),
                          "out": Out(stream.Signature(width))})

    def elaborate(self, platform):
        m = Module()
        width = len(self.data)
        m.submodules.q = q = fifo.SyncFIFO(width=width, depth=self.DEPTH)
        o = Signal(COUNT)
        i = Signal(COUNT)
        row = Signal(self.addr_bits)
        addr = Signal(self.addr_bits)
        left = Signal()
        pending, pending2 = Signal(), Signal()          # a word read, then registered
        data_r = Signal(width)
        pat = Signal.like(self.pat)
        pop = q.r_rdy & self.out.ready
        issue = left & (q.level + pending + pending2 - pop < self.DEPTH)
        m.d.comb += [self.addr.eq(addr), q.w_en.eq(pending2), q.w_data.eq(data_r),
                     self.out.valid.eq(q.r_rdy), self.out.payload.eq(q.r_data), q.r_en.eq(self.out.ready)]
        m.d.sync += [pending.eq(issue), pending2.eq(pending), data_r.eq(self.data)]
        with m.If(issue):
            with m.If(i == pat.icount - 1):
                m.d.sync += [i.eq(0), o.eq(o + 1), row.eq(row + pat.ostride), addr.eq(row + pat.ostride)]
                with m.If(o == pat.ocount - 1):
                    m.d.sync += left.eq(0)
            with m.Else():
                m.d.sync += [i.eq(i + 1), addr.eq(addr + pat.istride)]
        with m.If(self.go):
            m.d.sync += [pat.eq(self.pat), o.eq(0), i.eq(0), row.eq(self.pat.base), addr.eq(self.pat.base),
                         left.eq((self.pat.ocount != 0) & (self.pat.icount != 0))]
        return m


class Serializer(wiring.Component):
    """Words of ``lanes`` values → one value per beat; a row of ``elems`` values spans
    ceil(elems / lanes) words, and the unused lanes of a row's last word are skipped."""

    def __init__(self, lane_bits: int, lanes: int):
        self.lane_bits, self.lanes = lane_bits, lanes
        super().__init__({"inp": In(stream.Signature(lane_bits * lanes)),
                          "out": Out(stream.Signature(lane_bits)), "elems": In(COUNT)})

    def elaborate(self, platform):
        m = Module()
        word = Signal(self.lane_bits * self.lanes)
        full = Signal()
        c = Signal(range(self.lanes))
        e = Signal(COUNT)
        take = self.out.valid & self.out.ready
        row_end = e == self.elems - 1
        word_end = take & ((c == self.lanes - 1) | row_end)
        m.d.comb += [self.out.valid.eq(full), self.out.payload.eq(word.word_select(c, self.lane_bits)),
                     self.inp.ready.eq(~full | word_end)]
        with m.If(take):
            m.d.sync += [c.eq(c + 1), e.eq(e + 1)]
            with m.If(word_end):
                m.d.sync += [c.eq(0), full.eq(0)]
            with m.If(row_end):
                m.d.sync += e.eq(0)
        with m.If(self.inp.valid & self.inp.ready):
            m.d.sync += [word.eq(self.inp.payload), full.eq(1)]
        return m


class LayerEngine(wiring.Component):
    def __init__(self, cfg: LayerConfig):
        self.cfg = cfg
        self.layout = desc_layout(cfg)
        L = cfg.lanes
        addr = max(1, (cfg.scratch_words - 1).bit_length())
        self.addr_bits = addr
        super().__init__({
            "prog_in": In(stream.Signature(self.layout.size)),
            "s_in": In(stream.Signature(data.StructLayout({"addr": addr, "data": 8 * L}))),
            "w_in": In(stream.Signature(8 * L)),
            "q_in": In(stream.Signature(cfg.bus_bits)),
            "out": Out(stream.Signature(32 * L)),
            "pc": In(range(cfg.prog_words)),
            "start": In(1), "busy": Out(1), "done": Out(1), "cycles": Out(32), "gemm_start": Out(1),
            "error": Out(1),                            # the program stopped at an unknown opcode
            "at": Out(range(cfg.prog_words + 1)),       # the descriptor being run (for waves and hangs)
            # a descriptor that takes stream words starts: a GEMM on streamed weights (param 0)
            # or a PARAM MOVE (param 1), ``fetch_words`` words at ``fetch_addr`` of its region
            "fetch": Out(1), "fetch_param": Out(1), "fetch_addr": Out(ADDR_BITS), "fetch_words": Out(24),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, L = self.cfg, self.cfg.lanes
        m.submodules.eng = eng = GemmEngine(cfg.gemm)
        m.submodules.ln = ln = LayerNormUnit(cfg.max_d, L)
        m.submodules.sm = sm = SoftmaxUnit(cfg.max_row, L)
        if cfg.gelu:
            m.submodules.gelu = gelu = GeluUnit(L)
        if cfg.table:
            m.submodules.table = table = TableUnit(L)
        m.submodules.add = add = AddUnit(L)
        m.submodules.ser8 = ser8 = Serializer(8, L)
        m.submodules.reader = rdr = ScratchReader(self.addr_bits, 8 * L)

        # ------------------------------------------------------------ memories
        m.submodules.prog = prog = memory.Memory(shape=self.layout, depth=cfg.prog_words, init=[])
        prog_wr, prog_rd = prog.write_port(), prog.read_port()
        m.submodules.scratch = scratch = memory.Memory(shape=unsigned(8 * L), depth=cfg.scratch_words, init=[])
        s_wr = scratch.write_port(granularity=8)
        s_rd = scratch.read_port()
        s_rd_a = scratch.read_port()          # the GEMM engine's activations
        m.submodules.pmem = pmem = memory.Memory(shape=unsigned(8 * L), depth=cfg.p_words, init=[])
        p_wr, p_rd = pmem.write_port(), pmem.read_port()     # softmax → probabilities → P·V's activations
        m.d.comb += [s_rd.addr.eq(rdr.addr), rdr.data.eq(s_rd.data),
                     s_rd_a.addr.eq(eng.a_addr), p_rd.addr.eq(eng.a_addr)]

        idle = Signal()
        start = Signal()
        m.d.comb += [start.eq(self.start & idle), self.busy.eq(~idle)]
        prog_ptr = Signal(range(cfg.prog_words + 1))
        m.d.comb += [self.prog_in.ready.eq(idle), prog_wr.en.eq(self.prog_in.valid & idle),
                     prog_wr.addr.eq(prog_ptr), prog_wr.data.eq(self.prog_in.payload)]
        with m.If(self.prog_in.valid & idle):
            m.d.sync += prog_ptr.eq(prog_ptr + 1)
        with m.If(start):
            m.d.sync += prog_ptr.eq(0)

        # ------------------------------------------------------------ the current descriptor
        d = Signal(self.layout)
        pc = Signal(range(cfg.prog_words + 1))
        m.d.comb += [prog_rd.addr.eq(pc), self.at.eq(pc)]
        moving = Signal()           # a MOVE is running
        gemm_go = Signal()
        move_go = Signal()
        m.d.comb += [self.gemm_start.eq(gemm_go), self.fetch_addr.eq(d.addr), self.fetch_words.eq(d.words),
                     self.fetch_param.eq(d.src == Src.PARAM),
                     self.fetch.eq(gemm_go & ~d.w_scratch | move_go & (d.src == Src.PARAM))]

        m.d.comb += eng.a_data.eq(Mux(d.a_from_p, p_rd.data, s_rd_a.data))

        # ------------------------------------------------------------ the softmax side channel
        # raw bank (the engine's second read port) → softmax → probability memory, while the
        # controller runs the next descriptors (the next head's Q·Kᵀ, the last head's P·V)
        raw_bits = max(1, (cfg.gemm.raw_words - 1).bit_length())
        m.submodules.raw_reader = rr = ScratchReader(raw_bits, 32 * L, self.addr_bits)
        side = Signal(self.layout)
        side_go = Signal()
        side_busy = Signal()
        side_ptr = Signal(range(cfg.p_words + 1))
        side_left = Signal(24)
        m.d.comb += [eng.raw_rd_addr.eq(rr.addr), eng.raw_rd_bank.eq(side.raw_bank), rr.data.eq(eng.raw_rd_data),
                     rr.go.eq(side_go), rr.pat.eq(d.rd),
                     sm.inp.valid.eq(rr.out.valid), sm.inp.payload.eq(rr.out.payload), rr.out.ready.eq(sm.inp.ready),
                     sm.length.eq(side.elems), sm.pre.eq(side.pre), sm.x0.eq(side.x0), sm.qb.eq(side.sqb),
                     sm.qc.eq(side.sqc), sm.out.ready.eq(1),
                     p_wr.en.eq(sm.out.valid), p_wr.addr.eq(side_ptr), p_wr.data.eq(sm.out.payload)]
        with m.If(sm.out.valid):
            m.d.sync += [side_ptr.eq(side_ptr + 1), side_left.eq(side_left - 1)]
            with m.If(side_left == 1):
                m.d.sync += side_busy.eq(0)
        with m.If(side_go):
            m.d.sync += [side.eq(d), side_ptr.eq(d.wr.base), side_left.eq(d.total), side_busy.eq(d.total != 0)]

        # ------------------------------------------------------------ engine control
        m.d.comb += [eng.m.eq(d.m), eng.raw_bank.eq(d.raw_bank), eng.k.eq(d.k), eng.n.eq(d.n), eng.raw.eq(d.raw),
                     eng.a_base.eq(d.a_base), eng.a_stride.eq(d.a_stride),
                     eng.token_bias.eq(d.token_bias), eng.start.eq(gemm_go)]
        gemm_w = Signal()           # a GEMM that takes its weights from the scratch reader is running
        with m.If(gemm_w):
            m.d.comb += [eng.w_in.valid.eq(rdr.out.valid), eng.w_in.payload.eq(rdr.out.payload),
                         rdr.out.ready.eq(eng.w_in.ready)]
        with m.Else():
            m.d.comb += [eng.w_in.valid.eq(self.w_in.valid), eng.w_in.payload.eq(self.w_in.payload),
                         self.w_in.ready.eq(eng.w_in.ready & eng.busy)]

        # ------------------------------------------------------------ the reader
        m.d.comb += [rdr.go.eq(move_go & ((d.src == Src.SCRATCH) | (d.unit == Unit.ADD)) | gemm_go & d.w_scratch),
                     rdr.pat.eq(d.rd)]

        # ------------------------------------------------------------ source
        src = stream.Signature(cfg.bus_bits).create()
        q_taken = Signal(24)
        with m.If(move_go):
            m.d.sync += q_taken.eq(0)
        res = stream.Signature(cfg.bus_bits).create()     # what goes to the destination
        on = moving
        with m.If(moving), m.Switch(d.src):
            with m.Case(Src.SCRATCH):
                with m.If(~gemm_w & (d.unit != Unit.ADD)):
                    m.d.comb += [src.valid.eq(rdr.out.valid & on), src.payload.eq(rdr.out.payload),
                                 rdr.out.ready.eq(src.ready & on)]
            with m.Case(Src.ENG_OUT):
                m.d.comb += [src.valid.eq(eng.out.valid & on), src.payload.eq(eng.out.payload),
                             eng.out.ready.eq(src.ready & on)]
            with m.Case(Src.ENG_RAW):
                m.d.comb += [src.valid.eq(eng.raw_out.valid & on), src.payload.eq(eng.raw_out.payload),
                             eng.raw_out.ready.eq(src.ready & on)]
            with m.Case(Src.PARAM):
                more = q_taken != d.words
                m.d.comb += [src.valid.eq(self.q_in.valid & more), src.payload.eq(self.q_in.payload),
                             self.q_in.ready.eq(src.ready & more)]
                with m.If(self.q_in.valid & self.q_in.ready):
                    m.d.sync += q_taken.eq(q_taken + 1)

        # ------------------------------------------------------------ unit
        m.d.comb += [ln.d.eq(d.elems), ln.shift.eq(d.ln_shift), ln.eps.eq(d.ln_eps),
                     add.m_a.eq(d.m_a), add.m_b.eq(d.m_b), add.shift.eq(d.shift),
                     ser8.elems.eq(d.elems)]
        if cfg.gelu:
            m.d.comb += [gelu.qb.eq(d.gqb), gelu.qc.eq(d.gqc), gelu.mult.eq(d.m_a), gelu.shift.eq(d.shift)]

        def chain(a, b, width=None):      # stream a → b (payload truncated or extended)
            payload = a.payload if width is None else a.payload[:width]
            m.d.comb += [b.valid.eq(a.valid), b.payload.eq(payload), a.ready.eq(b.ready)]

        with m.If(moving), m.Switch(d.unit):
            with m.Case(Unit.NONE):
                chain(src, res)
            if cfg.gelu:
                with m.Case(Unit.GELU):
                    chain(src, gelu.inp, 8 * L)
                    chain(gelu.out, res)
            with m.Case(Unit.ADD):         # a = the scratch word (residual), b = the source
                both = src.valid & rdr.out.valid & on
                m.d.comb += [add.inp.valid.eq(both), src.ready.eq(add.inp.ready & both),
                             rdr.out.ready.eq(add.inp.ready & both)]
                for c in range(L):
                    m.d.comb += [add.inp.payload[c].a.eq(rdr.out.payload.word_select(c, 8)),
                                 add.inp.payload[c].b.eq(src.payload.word_select(c, 8))]
                chain(add.out, res)
            with m.Case(Unit.LN):
                chain(src, ln.inp, 8 * L)
                chain(ln.out, res)
            with m.Case(Unit.SERIAL):
                chain(src, ser8.inp, 8 * L)
                chain(ser8.out, res)
            if cfg.table:
                with m.Case(Unit.TABLE):
                    chain(src, table.inp, 8 * L)
                    chain(table.out, res)

        # ------------------------------------------------------------ destination
        taken = Signal(24)
        beat = res.valid & res.ready
        with m.If(beat):
            m.d.sync += taken.eq(taken + 1)
        # the 2-D writer (and the transposed writer's counters)
        wo = Signal(COUNT)
        wi = Signal(COUNT)
        wrow = Signal(self.addr_bits)
        waddr = Signal(self.addr_bits)
        tlane = Signal(range(L))          # transposed: token lane (token % L)
        tgroup = Signal(COUNT)            # token group (token // L)
        telem = Signal(COUNT)             # element of the row (the transposed row index)
        trow = Signal(self.addr_bits)     # base + telem * groups
        with m.Switch(d.dst):
            with m.Case(Dst.SCRATCH):
                m.d.comb += [res.ready.eq(1), s_wr.en.eq(Mux(beat, (1 << L) - 1, 0)), s_wr.addr.eq(waddr),
                             s_wr.data.eq(res.payload[:8 * L])]
                with m.If(beat):
                    with m.If(wi == d.wr.icount - 1):
                        m.d.sync += [wi.eq(0), wo.eq(wo + 1), wrow.eq(wrow + d.wr.ostride), waddr.eq(wrow + d.wr.ostride)]
                    with m.Else():
                        m.d.sync += [wi.eq(wi + 1), waddr.eq(waddr + d.wr.istride)]
            with m.Case(Dst.TRANSPOSE):
                m.d.comb += [res.ready.eq(1), s_wr.en.eq(Mux(beat, 1 << tlane, 0)), s_wr.addr.eq(trow + tgroup),
                             s_wr.data.eq(Cat(*[res.payload[:8]] * L))]
                with m.If(beat):
                    with m.If(telem == d.elems - 1):
                        m.d.sync += [telem.eq(0), trow.eq(d.wr.base), tlane.eq(tlane + 1)]
                        with m.If(tlane == L - 1):
                            m.d.sync += [tlane.eq(0), tgroup.eq(tgroup + 1)]
                    with m.Else():
                        m.d.sync += [telem.eq(telem + 1), trow.eq(trow + d.groups)]
            with m.Case(Dst.ENG_P):
                chain(res, eng.p_in)
            with m.Case(Dst.ENG_TB):
                chain(res, eng.tb_in, 32 * L)
            with m.Case(Dst.LN_P):              # L channels, each in a PARAM_BITS slot of the word
                m.d.comb += [ln.p_in.valid.eq(res.valid), res.ready.eq(ln.p_in.ready)]
                for c in range(L):
                    m.d.comb += ln.p_in.payload[c].as_value().eq(res.payload[PARAM_BITS * c:PARAM_BITS * c + LN_PARAM.size])
            with m.Case(Dst.HOST):
                chain(res, self.out, 32 * L)
            if cfg.table:
                with m.Case(Dst.TABLE):
                    chain(res, table.t_in, 8 * L)
        with m.If(move_go):
            m.d.sync += [taken.eq(0), wo.eq(0), wi.eq(0), wrow.eq(d.wr.base), waddr.eq(d.wr.base),
                         tlane.eq(0), tgroup.eq(0), telem.eq(0), trow.eq(d.wr.base)]
        # streams that are not selected keep their ready low
        with m.If(~moving):
            m.d.comb += res.ready.eq(0)

        # ------------------------------------------------------------ controller
        with m.FSM() as fsm:
            with m.State("IDLE"):
                with m.If(start):
                    m.d.sync += [pc.eq(self.pc), self.done.eq(0), self.error.eq(0)]
                    m.next = "FETCH"
            with m.State("FETCH"):                 # the read port samples pc
                m.next = "DECODE"
            def dispatch(op):
                with m.Switch(op):
                    with m.Case(Op.MOVE):
                        m.next = "MOVE_GO"
                    with m.Case(Op.GEMM):
                        m.next = "GEMM_GO"
                    with m.Case(Op.SOFTMAX):
                        m.next = "SIDE_GO"
                    with m.Case(Op.END):
                        m.d.sync += self.done.eq(1)
                        m.next = "IDLE"
                    with m.Default():                   # an unknown opcode: stop, with error set
                        m.d.sync += [self.done.eq(1), self.error.eq(1)]
                        m.next = "IDLE"

            with m.State("DECODE"):
                m.d.sync += [d.eq(prog_rd.data), pc.eq(pc + 1)]
                op = prog_rd.data.op
                with m.If((prog_rd.data.wait | (op == Op.SOFTMAX) | (op == Op.END)) & side_busy):
                    m.next = "WAIT_SIDE"           # the side channel is still busy
                with m.Else():
                    dispatch(op)
            with m.State("WAIT_SIDE"):
                with m.If(~side_busy):
                    dispatch(d.op)
            with m.State("SIDE_GO"):
                m.d.comb += side_go.eq(1)
                m.next = "FETCH"
            with m.State("MOVE_GO"):
                m.d.comb += move_go.eq(1)
                m.next = "MOVE"
            with m.State("MOVE"):
                m.d.comb += moving.eq(1)
                with m.If((taken == d.total) | ((taken == d.total - 1) & beat)):
                    m.next = "FETCH"
            with m.State("GEMM_GO"):
                m.d.comb += gemm_go.eq(1)
                m.d.sync += gemm_w.eq(d.w_scratch)
                m.next = "GEMM"
            with m.State("GEMM"):
                with m.If(eng.done & ~eng.busy):
                    m.d.sync += gemm_w.eq(0)
                    m.next = "FETCH"
        m.d.comb += idle.eq(fsm.ongoing("IDLE"))
        with m.If(~idle):
            m.d.sync += self.cycles.eq(self.cycles + 1)
        with m.If(start):
            m.d.sync += self.cycles.eq(0)

        # ------------------------------------------------------------ scratch loads while idle
        with m.If(idle):
            m.d.comb += [self.s_in.ready.eq(1), s_wr.en.eq(Mux(self.s_in.valid, (1 << L) - 1, 0)),
                         s_wr.addr.eq(self.s_in.payload.addr), s_wr.data.eq(self.s_in.payload.data)]
        return m


def to_verilog(cfg: LayerConfig) -> str:
    return emit.to_verilog(LayerEngine(cfg), cfg.name)
