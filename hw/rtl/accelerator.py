"""The accelerator: the layer engine, the exit head, the exit comparator and a sequencer, one
design that runs N images of an early-exit ViT from one ``start``.

Ports
-----
* ``mem``: an AXI4 read port (``hw.rtl.axi.read_port``), ``8 L`` bits wide, byte addresses.
  Everything comes through it: the run table, the thresholds, the images, the programs, the
  weights and the parameters, each read by its address.
* ``res``: an AXI4 write port (``hw.rtl.axi.write_port``): one result record per image.
* ``csr``: the control and status registers on a Wishbone (classic) bus, 32-bit words
  (``Reg``; ``register_map`` lists them).

Memory (everything the host writes; ``sim.image`` lays it out)
-------------------------------------------------------------
* the run table at ``TABLE``: a header entry, then one entry per segment, each
  ``ENTRY_FIELDS`` 32-bit fields (little-endian, the first field in the low bits):
  * header: ``MAGIC``, candidates, thresholds address, image words, the image's scratchpad word
    address;
  * segment: flags (bit 0 valid, bit 1 final: its host words are the class logits, bit 2
    image: the image is loaded before it, bits 8..15 the candidate whose head takes its
    tokens (``NO_CANDIDATE``: none), bits 16..23 the backbone layer it ends, which a result
    names), the program's address, its descriptor count, the weight region's address, the
    parameter region's address (each descriptor's stream words lie at its ``addr`` in one of
    them: ``hw.program.addressed``), and for a segment with a candidate the address and beat
    count of the candidate's head block (``hw.rtl.head.stream_block``);
* the thresholds: one 64-bit word per candidate (int32 threshold | candidate bit << 32);
* the images: ``IMAGES`` words of ``8 L`` bits each ``IMAGE_STRIDE`` bytes apart;
* the results: record n (``RECORD_BITS``) at ``RESULTS + n RECORD_BYTES``: cycles (bits 0..31,
  from the image's start to its result's write), class (32..47), layer (48..55) and
  candidate (56..63, ``NO_CANDIDATE`` for full depth).

The sequencer
-------------
On ``start`` it reads the run table (one entry a read, until the final entry) and the
thresholds, then for every image: for every segment, it loads the image into the
scratchpad (segments flagged image), fetches the program into the engine, starts it and
serves its stream reads (weights at the weight region + ``addr``, parameters at the
parameter region + ``addr``) until ``done``. After a segment with a candidate it fetches the
candidate's head block (its scalars, LayerNorm words, dense rows and class embeddings) into the
exit head, which finishes with it, and waits for the comparator's decision; on ``exit`` the
image ends there. The final segment's logits go to the
comparator as the last candidate, whose threshold is the lowest int32 (it always exits). The
result is written, and the next image starts. No host action is needed between ``start`` and
``done``.

Faults stop the run with a distinct code in ``ERROR`` (``Err``), never a hang: a read past
``LIMIT``, a memory that stops answering (``hw.rtl.axi.WATCHDOG``), a run table without its
final entry, a wrong magic, a candidate that does not exist.
"""
from __future__ import annotations

from contextlib import contextmanager
from enum import IntEnum

from amaranth import Cat, Const, Module, Mux, Signal, unsigned
from amaranth.lib import fifo, memory, wiring
from amaranth.lib.wiring import In, Out

from hw.rtl import axi, comparator, emit
from hw.rtl.comparator import ExitComparator
from hw.rtl.head import ExitHead
from hw.rtl.isa import LayerConfig, bus_bits, desc_beats, param_beats
from hw.rtl.layer import LayerEngine
from model.errors import QexitError

MAGIC = 0x54525851            # "QXRT" little-endian
ENTRY_FIELDS = 8
ENTRY_BITS = 32 * ENTRY_FIELDS
ENTRY_KEPT = 7                # the fields of a segment entry the sequencer keeps on chip
MAX_SEGMENTS = 64
NO_CANDIDATE = 0xFF
THRESHOLD_BITS = 64
RECORD_BITS = 64
VERSION = 1


class Flag(IntEnum):
    VALID = 0
    FINAL = 1
    IMAGE = 2


class Err(IntEnum):
    NONE = 0
    OPCODE = 1          # a program word with an unknown opcode
    ADDRESS = 2         # a read past LIMIT
    WATCHDOG = 3        # the memory stopped answering
    TABLE_END = 4       # the run table ends before its final entry
    LAYER = 5           # a candidate (head, threshold) that does not exist
    TABLE = 6           # no run table at TABLE (wrong magic)


class Reg(IntEnum):
    """Word index of each register (byte address 4 x index)."""
    CTRL = 0            # write 1: start
    STATUS = 1          # bit 0 busy, bit 1 done, bit 2 error
    ERROR = 2           # Err
    IMAGES = 3          # images to run
    TABLE = 4           # run table address
    IMAGES_BASE = 5     # first image's address
    IMAGE_STRIDE = 6    # bytes from one image to the next
    RESULTS = 7         # first result record's address
    LIMIT = 8           # reads at or past this byte address fault
    IMAGES_DONE = 9     # results written since start
    LAST = 10           # the last result: class | layer << 16 | candidate << 24
    LAST_CYCLES = 11    # the last result's cycles
    ID = 12             # lanes | VERSION << 16
    CYCLES = 13         # cycles since start


WRITABLE = (Reg.CTRL, Reg.IMAGES, Reg.TABLE, Reg.IMAGES_BASE, Reg.IMAGE_STRIDE, Reg.RESULTS, Reg.LIMIT)


def csr_signature() -> wiring.Signature:
    """Wishbone classic, the host's (manager's) side: word addresses, 32-bit data."""
    return wiring.Signature({"adr": Out(6), "dat_w": Out(32), "dat_r": In(32), "sel": Out(4), "cyc": Out(1),
                             "stb": Out(1), "we": Out(1), "ack": In(1)})


def record_beats(lanes: int) -> int:
    return -(-RECORD_BITS // bus_bits(lanes))


def record_bytes(lanes: int) -> int:
    return record_beats(lanes) * bus_bits(lanes) // 8


def threshold_beats(lanes: int) -> int:
    return -(-THRESHOLD_BITS // bus_bits(lanes))


def entry_beats(lanes: int) -> int:
    return -(-ENTRY_BITS // bus_bits(lanes))


def register_map(lanes: int) -> dict:
    """The registers (byte offsets), the error codes and the record layout, for the JSON file
    and the C header ``qexit rtl accelerator`` writes."""
    return {"bus": "wishbone-classic", "data_bits": 32, "lanes": lanes, "version": VERSION,
            "registers": {r.name: 4 * r.value for r in Reg}, "writable": [r.name for r in WRITABLE],
            "errors": {e.name: e.value for e in Err},
            "record": {"bytes": record_bytes(lanes), "cycles": [0, 31], "class": [32, 47], "layer": [48, 55],
                       "candidate": [56, 63]},
            "table": {"magic": MAGIC, "entry_bytes": ENTRY_BITS // 8, "max_segments": MAX_SEGMENTS,
                      "flags": {f.name: f.value for f in Flag}, "no_candidate": NO_CANDIDATE},
            "memory": {"protocol": "AXI4", "data_bits": bus_bits(lanes), "addr_bits": axi.ADDR_BITS,
                       "max_burst": axi.MAX_BURST, "max_outstanding": axi.MAX_OUTSTANDING,
                       "watchdog_cycles": axi.WATCHDOG}}


def c_header(lanes: int) -> str:
    rm = register_map(lanes)
    lines = ["/* qexit accelerator register map (generated by `qexit rtl accelerator`) */",
             "#pragma once", f"#define QEXIT_LANES {lanes}", f"#define QEXIT_VERSION {VERSION}",
             f"#define QEXIT_TABLE_MAGIC 0x{MAGIC:08X}u", f"#define QEXIT_RECORD_BYTES {rm['record']['bytes']}"]
    lines += [f"#define QEXIT_REG_{name} 0x{off:02X}u" for name, off in rm["registers"].items()]
    lines += [f"#define QEXIT_ERR_{name} {code}" for name, code in rm["errors"].items()]
    return "\n".join(lines) + "\n"


class Accelerator(wiring.Component):
    """The whole accelerator for an engine ``cfg``: ``head`` (a ``FixedHead``: its shape; its
    constants come from memory), ``ks`` (the candidates it may serve), ``tokens`` and ``dense``
    (``StreamDense``) describe the exit head, or ``head`` None for an accelerator without
    exits; ``classes`` logits end a full-depth image."""

    def __init__(self, cfg: LayerConfig, classes: int, head=None, ks=(), tokens: int = 0, dense=None,
                 max_candidates: int = 16):
        if not 1 <= classes < 2 ** comparator.CLASS_BITS:
            raise QexitError(f"{classes} classes do not fit the comparator's class field")
        self.cfg, self.classes = cfg, classes
        self.head, self.ks, self.tokens, self.dense = head, list(ks), tokens, dense
        self.max_candidates = max_candidates
        L = cfg.lanes
        self.dw = bus_bits(L)
        self.max_beats = max(param_beats(L), desc_beats(cfg), entry_beats(L), threshold_beats(L), 1)
        super().__init__({"mem": Out(axi.read_port(self.dw)), "res": Out(axi.write_port(self.dw)),
                          "csr": In(csr_signature()), "busy": Out(1), "irq": Out(1),
                          # every decision the sequencer takes (for a trace; an SoC may leave it open)
                          "dec_valid": Out(1), "dec": Out(comparator.OUT)})

    def elaborate(self, platform):
        m = Module()
        cfg, L, DW, C = self.cfg, self.cfg.lanes, self.dw, self.classes
        m.submodules.engine = eng = LayerEngine(cfg)
        m.submodules.fetch = fx = axi.Fetcher(DW, self.max_beats)
        m.submodules.writer = wr = axi.Writer(DW, record_beats(L))
        m.submodules.comparator = cmp = ExitComparator(self.max_candidates + 1)
        wiring.connect(m, fx.bus, wiring.flipped(self.mem))
        wiring.connect(m, wr.bus, wiring.flipped(self.res))
        head = None
        if self.head is not None:
            m.submodules.head = head = ExitHead(self.head, self.ks, self.tokens, self.dense, L)

        # ------------------------------------------------------------ registers
        regs = {r: Signal(32, name=f"reg_{r.name.lower()}") for r in Reg}
        busy, done, error = Signal(), Signal(), Signal(8)
        start = Signal()
        wb = self.csr
        m.d.sync += wb.ack.eq(wb.cyc & wb.stb & ~wb.ack)
        m.d.comb += start.eq(wb.cyc & wb.stb & ~wb.ack & wb.we & (wb.adr == Reg.CTRL) & wb.dat_w[0] & ~busy)
        with m.If(wb.cyc & wb.stb & ~wb.ack & wb.we & ~busy):
            with m.Switch(wb.adr):
                for r in WRITABLE:
                    if r != Reg.CTRL:
                        with m.Case(r):
                            m.d.sync += regs[r].eq(wb.dat_w)
        read = {r: regs[r] for r in Reg}
        read[Reg.STATUS] = Cat(busy, done, error != 0)
        read[Reg.ERROR] = error
        read[Reg.ID] = Const(L | (VERSION << 16), 32)
        with m.Switch(wb.adr):
            for r, v in read.items():
                with m.Case(r):
                    m.d.sync += wb.dat_r.eq(v)
        m.d.comb += [self.busy.eq(busy), self.irq.eq(done | (error != 0))]

        # ------------------------------------------------------------ the run table, on chip
        n_cand = Signal(8)
        th_addr, img_words, img_scratch = Signal(32), Signal(24), Signal(32)
        m.submodules.table = table = memory.Memory(shape=unsigned(ENTRY_KEPT * 32), depth=MAX_SEGMENTS, init=[])
        t_wr, t_rd = table.write_port(), table.read_port()
        segs = Signal(range(MAX_SEGMENTS + 1))
        seg = Signal(range(MAX_SEGMENTS + 1))
        cur = Signal(ENTRY_KEPT * 32)
        flags, prog_addr, prog_words, w_base, q_base, head_addr, head_beats = (
            cur.word_select(i, 32) for i in range(ENTRY_KEPT))
        cand = flags[8:16]
        has_cand = cand != NO_CANDIDATE
        final = flags[Flag.FINAL]
        m.d.comb += t_rd.addr.eq(seg)

        # ------------------------------------------------------------ the image being run
        image = Signal(32)
        image_addr = Signal(32)              # its byte address: IMAGES_BASE + image x IMAGE_STRIDE, kept by adding
        count = Signal(24)                   # words taken of the current fetch
        cycles = Signal(32)
        result_cls, result_layer, result_cand = Signal(16), Signal(8), Signal(8)
        running_image = Signal()
        with m.If(running_image):
            m.d.sync += cycles.eq(cycles + 1)
        with m.If(busy):
            m.d.sync += regs[Reg.CYCLES].eq(regs[Reg.CYCLES] + 1)

        def fetch(addr, words, beats):
            m.d.comb += [fx.go.eq(1), fx.addr.eq(addr), fx.words.eq(words), fx.beats.eq(beats)]
            m.d.sync += count.eq(0)

        m.d.comb += fx.limit.eq(regs[Reg.LIMIT])
        word = fx.out.payload
        taken = fx.out.valid & fx.out.ready

        def fail(code):
            m.d.sync += [error.eq(code), busy.eq(0), running_image.eq(0)]
            m.next = "IDLE"

        @contextmanager
        def state(name):
            """An FSM state whose last word is the memory-fault check (it overrides the rest)."""
            with m.State(name):
                yield
                with m.If(fx.fault_address):
                    fail(Err.ADDRESS)
                with m.Elif(fx.fault_watchdog):
                    fail(Err.WATCHDOG)

        # ------------------------------------------------------------ engine streams
        in_run = Signal()
        m.d.comb += [eng.pc.eq(0), eng.q_in.payload.eq(word[:cfg.bus_bits]), eng.w_in.payload.eq(word[:8 * L]),
                     eng.prog_in.payload.eq(word[:len(eng.prog_in.payload)]),
                     eng.s_in.payload.addr.eq(img_scratch + count), eng.s_in.payload.data.eq(word[:8 * L])]
        q_now = Signal()               # the stream being fetched for the engine is parameters
        with m.If(in_run & eng.fetch):
            m.d.sync += q_now.eq(eng.fetch_param)
            fetch(Mux(eng.fetch_param, q_base, w_base) + eng.fetch_addr, eng.fetch_words,
                  Mux(eng.fetch_param, param_beats(L), 1))
        with m.If(in_run):
            with m.If(q_now):
                m.d.comb += [eng.q_in.valid.eq(fx.out.valid), fx.out.ready.eq(eng.q_in.ready)]
            with m.Else():
                m.d.comb += [eng.w_in.valid.eq(fx.out.valid), fx.out.ready.eq(eng.w_in.ready)]

        # the engine's host words: the candidate's head, the logits, or nowhere
        cw = -(-C // L)
        m.submodules.logits = lq = fifo.SyncFIFO(width=32 * L, depth=max(cw, 1))
        m.d.comb += lq.w_data.eq(eng.out.payload)
        if head is not None:
            m.d.comb += [head.index.eq(cand), head.inp.payload.eq(eng.out.payload[:8 * L])]
        to_head = in_run & has_cand if head is not None else Const(0)
        with m.If(to_head):
            if head is not None:
                m.d.comb += [head.inp.valid.eq(eng.out.valid), eng.out.ready.eq(head.inp.ready)]
        with m.Elif(in_run & final):
            m.d.comb += [lq.w_en.eq(eng.out.valid), eng.out.ready.eq(lq.w_rdy)]
        with m.Else():
            m.d.comb += eng.out.ready.eq(1)

        # the comparator: the head's beats, or the logits one a cycle as the last candidate
        lane = Signal(range(L))
        cls_i = Signal(range(C + 1))
        serial = Signal()
        m.d.comb += cmp.layers.eq(n_cand + 1)
        if head is not None:
            with m.If(~serial):
                m.d.comb += [cmp.inp.valid.eq(head.out.valid), cmp.inp.payload.eq(head.out.payload),
                             head.out.ready.eq(cmp.inp.ready)]
        with m.If(serial):
            m.d.comb += [cmp.inp.valid.eq(lq.r_rdy), cmp.inp.payload.score.eq(lq.r_data.word_select(lane, 32)),
                         cmp.inp.payload.gate.eq(0), cmp.inp.payload.layer.eq(n_cand),
                         cmp.inp.payload.last.eq(cls_i == C - 1)]
            with m.If(cmp.inp.valid & cmp.inp.ready):
                m.d.sync += [lane.eq(lane + 1), cls_i.eq(cls_i + 1)]
                with m.If((lane == L - 1) | (cls_i == C - 1)):
                    m.d.comb += lq.r_en.eq(1)
                    m.d.sync += lane.eq(0)
                with m.If(cls_i == C - 1):
                    m.d.sync += [cls_i.eq(0), serial.eq(0)]

        # ------------------------------------------------------------ the sequencer
        rb = record_bytes(L)
        m.d.comb += [wr.addr.eq(regs[Reg.RESULTS] + image * rb),
                     wr.data.eq(Cat(cycles, result_cls, result_layer, result_cand))]
        th_word = Signal(comparator.THRESHOLD)
        m.d.comb += [cmp.th_in.payload.eq(th_word)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(start):
                    m.d.comb += cmp.th_rewind.eq(1)
                    m.d.sync += [busy.eq(1), done.eq(0), error.eq(0), regs[Reg.IMAGES_DONE].eq(0),
                                 regs[Reg.CYCLES].eq(0), segs.eq(0), image.eq(0),
                                 image_addr.eq(regs[Reg.IMAGES_BASE])]
                    fetch(regs[Reg.TABLE], 1, entry_beats(L))
                    m.next = "HEADER"
            with state("HEADER"):
                m.d.comb += fx.out.ready.eq(1)
                with m.If(taken):
                    m.d.sync += [n_cand.eq(word[32:40]), th_addr.eq(word[64:96]), img_words.eq(word[96:120]),
                                 img_scratch.eq(word[128:160])]
                    with m.If(word[:32] != MAGIC):
                        fail(Err.TABLE)
                    with m.Elif(word[32:64] > self.max_candidates):
                        fail(Err.LAYER)
                    with m.Else():
                        fetch(regs[Reg.TABLE] + ENTRY_BITS // 8, 1, entry_beats(L))
                        m.next = "ENTRY"
            with state("ENTRY"):
                m.d.comb += [fx.out.ready.eq(1), t_wr.addr.eq(segs), t_wr.data.eq(word[:ENTRY_KEPT * 32])]
                e_flags = word[:32]
                e_cand = e_flags[8:16]
                with m.If(taken):
                    with m.If(~e_flags[Flag.VALID]):
                        fail(Err.TABLE_END)
                    with m.Elif((e_cand != NO_CANDIDATE) & ((e_cand >= n_cand) | (self.head is None))):
                        fail(Err.LAYER)
                    with m.Else():
                        m.d.comb += t_wr.en.eq(1)
                        m.d.sync += segs.eq(segs + 1)
                        with m.If(e_flags[Flag.FINAL]):
                            fetch(th_addr, n_cand, threshold_beats(L))
                            m.next = "THRESHOLDS"
                        with m.Elif(segs == MAX_SEGMENTS - 1):
                            fail(Err.TABLE_END)
                        with m.Else():
                            fetch(regs[Reg.TABLE] + (segs + 2) * (ENTRY_BITS // 8), 1, entry_beats(L))
            with state("THRESHOLDS"):            # the candidates' words, then the final one's
                with m.If(count == n_cand):
                    m.d.comb += [cmp.th_in.valid.eq(1), th_word.threshold.eq(-2 ** 31), th_word.candidate.eq(1)]
                    m.next = "IMAGE"
                with m.Else():
                    m.d.comb += [fx.out.ready.eq(1), cmp.th_in.valid.eq(fx.out.valid),
                                 th_word.as_value().eq(word[:33])]
                    with m.If(taken):
                        m.d.sync += count.eq(count + 1)
            with state("IMAGE"):
                with m.If(image == regs[Reg.IMAGES]):
                    m.d.sync += [busy.eq(0), done.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [cycles.eq(1), running_image.eq(1), seg.eq(0)]
                    m.next = "SEGMENT_READ"
            with state("SEGMENT_READ"):          # the table's read port samples seg
                m.next = "SEGMENT"
            with state("SEGMENT"):
                m.d.sync += cur.eq(t_rd.data)
                with m.If(t_rd.data[Flag.IMAGE]):
                    fetch(image_addr, img_words, 1)
                    m.next = "LOAD_IMAGE"
                with m.Else():
                    fetch(t_rd.data[32:64], t_rd.data[64:96], desc_beats(cfg))
                    m.next = "LOAD_PROGRAM"
            def load(name, port, words, nxt):
                """A state that feeds the fetched words into ``port`` and, after ``words``, goes to ``nxt``."""
                with state(name):
                    m.d.comb += [port.valid.eq(fx.out.valid), fx.out.ready.eq(port.ready)]
                    with m.If(taken):
                        m.d.sync += count.eq(count + 1)
                        with m.If(count == words - 1):
                            m.next = nxt

            load("LOAD_IMAGE", eng.s_in, img_words, "PROGRAM")
            with state("PROGRAM"):
                fetch(prog_addr, prog_words, desc_beats(cfg))
                m.next = "LOAD_PROGRAM"
            load("LOAD_PROGRAM", eng.prog_in, prog_words, "START")
            with state("START"):
                m.d.comb += eng.start.eq(1)
                m.next = "RUN"
            with state("RUN"):
                m.d.comb += in_run.eq(1)
                with m.If(eng.done & eng.error):
                    fail(Err.OPCODE)
                with m.Elif(eng.done):
                    with m.If(has_cand):                 # the candidate's head block, while it finishes its sums
                        fetch(head_addr, head_beats, 1)
                        m.next = "DECIDE"
                    with m.Elif(final):
                        m.d.sync += serial.eq(1)
                        m.next = "DECIDE"
                    with m.Else():
                        m.d.sync += seg.eq(seg + 1)
                        m.next = "SEGMENT_READ"
            with state("DECIDE"):
                m.d.comb += [cmp.out.ready.eq(1), self.dec_valid.eq(cmp.out.valid), self.dec.eq(cmp.out.payload)]
                if head is not None:
                    m.d.comb += [head.m_in.valid.eq(fx.out.valid & ~serial), head.m_in.payload.eq(word[:8 * L]),
                                 fx.out.ready.eq(head.m_in.ready & ~serial)]
                with m.If(cmp.out.valid):
                    with m.If(cmp.out.payload.exit):
                        m.d.sync += [result_cls.eq(cmp.out.payload.cls), result_layer.eq(flags[16:24]),
                                     result_cand.eq(cand)]
                        m.next = "WRITE"
                    with m.Else():
                        m.d.sync += seg.eq(seg + 1)
                        m.next = "SEGMENT_READ"
            with state("WRITE"):
                m.d.comb += wr.go.eq(1)
                m.d.sync += [running_image.eq(0), regs[Reg.LAST_CYCLES].eq(cycles)]
                m.next = "WRITE_WAIT"
            with state("WRITE_WAIT"):
                with m.If(~wr.busy):
                    m.d.sync += [image.eq(image + 1), image_addr.eq(image_addr + regs[Reg.IMAGE_STRIDE]),
                                 regs[Reg.IMAGES_DONE].eq(regs[Reg.IMAGES_DONE] + 1),
                                 regs[Reg.LAST].eq(Cat(result_cls, result_layer, result_cand))]
                    m.next = "IMAGE"
        return m


def top_name(lanes: int) -> str:
    """The whole accelerator's top module at L x L."""
    return f"qexit_accelerator_{lanes}x{lanes}"


def to_verilog(acc: Accelerator, name: str) -> str:
    return emit.to_verilog(acc, name)

