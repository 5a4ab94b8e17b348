"""The accelerator's external memory ports in the AXI4 convention, and the two managers that
drive them.

* ``read_port(data_bits)``: the AR and R channels (address, burst length and size, INCR
  bursts, data, ``rlast``, valid/ready both ways), byte addresses, ``data_bits`` wide.
* ``write_port(data_bits)``: the AW, W and B channels.
* ``Fetcher``: reads ``words`` words of ``beats`` beats each from a byte address and offers
  them as a stream, one word when its last beat arrives (the word's beats side by side, the
  first in the low bits). It splits the read into INCR bursts of at most ``MAX_BURST`` beats
  that never cross a ``MAX_BURST``-beat boundary (so never a 4 KB one), keeps up to
  ``MAX_OUTSTANDING`` bursts in flight, and issues the first burst the cycle after ``go``.
  It refuses a read that would pass ``limit`` (``fault_address``) and one whose memory stops
  answering for ``WATCHDOG`` cycles with a burst in flight (``fault_watchdog``); both hold until
  the next ``go``.
* ``Writer``: writes one record of ``beats`` beats to a byte address and waits for the B
  response.
"""
from __future__ import annotations

from amaranth import Cat, Module, Mux, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

ADDR_BITS = 32
LEN_BITS = 8              # AxLEN: beats - 1
ID_BITS = 4               # AxID, xID: every transaction uses ID 0 (in order)
MAX_BURST = 16            # beats per burst
MAX_OUTSTANDING = 4       # bursts in flight
WATCHDOG = 1 << 16        # cycles with a burst in flight and no beat before the read is refused
BURST_INCR = 1


def size_code(data_bits: int) -> int:
    """AxSIZE: log2 of the bytes per beat."""
    return (data_bits // 8).bit_length() - 1


def read_port(data_bits: int) -> wiring.Signature:
    """The manager's side of the read channels (AR out, R in)."""
    return wiring.Signature({
        "arid": Out(ID_BITS), "araddr": Out(ADDR_BITS), "arlen": Out(LEN_BITS), "arsize": Out(3), "arburst": Out(2),
        "arvalid": Out(1), "arready": In(1),
        "rid": In(ID_BITS), "rdata": In(data_bits), "rresp": In(2), "rlast": In(1), "rvalid": In(1), "rready": Out(1)})


def write_port(data_bits: int) -> wiring.Signature:
    """The manager's side of the write channels (AW, W out, B in)."""
    return wiring.Signature({
        "awid": Out(ID_BITS), "awaddr": Out(ADDR_BITS), "awlen": Out(LEN_BITS), "awsize": Out(3), "awburst": Out(2),
        "awvalid": Out(1), "awready": In(1),
        "wdata": Out(data_bits), "wstrb": Out(data_bits // 8), "wlast": Out(1), "wvalid": Out(1), "wready": In(1),
        "bid": In(ID_BITS), "bresp": In(2), "bvalid": In(1), "bready": Out(1)})


class Fetcher(wiring.Component):
    """Words of up to ``max_beats`` beats from memory, as a stream (module docstring)."""

    def __init__(self, data_bits: int, max_beats: int):
        if data_bits % 8 or data_bits & (data_bits - 1):
            raise ValueError(f"AXI data width {data_bits} must be a power of two bytes")
        self.data_bits, self.max_beats = data_bits, max_beats
        super().__init__({
            "go": In(1), "addr": In(ADDR_BITS), "words": In(24), "beats": In(range(max_beats + 1)),
            "limit": In(ADDR_BITS + 1),
            "out": Out(wiring.Signature({"valid": Out(1), "ready": In(1), "payload": Out(data_bits * max_beats)})),
            "busy": Out(1), "fault_address": Out(1), "fault_watchdog": Out(1),
            "bus": Out(read_port(data_bits)),
        })

    def elaborate(self, platform):
        m = Module()
        bus, DW = self.bus, self.data_bits
        step = DW // 8
        shift = step.bit_length() - 1
        addr = Signal(ADDR_BITS + 1)              # the next burst's byte address
        left_ar = Signal(24 + 8)                  # beats not yet requested
        left_r = Signal(24 + 8)                   # beats not yet received
        outstanding = Signal(range(MAX_OUTSTANDING + 1))
        beat = Signal(range(self.max_beats))      # beat of the current word
        beats = Signal(range(self.max_beats + 1))
        held = [Signal(DW, name=f"held{i}") for i in range(self.max_beats - 1)]
        quiet = Signal(range(WATCHDOG + 1))

        # the next burst: up to the next MAX_BURST-beat boundary, at most what is left
        to_boundary = MAX_BURST - (addr >> shift)[:MAX_BURST.bit_length() - 1]
        burst = Mux(left_ar < to_boundary, left_ar, to_boundary)
        fault = self.fault_address | self.fault_watchdog
        m.d.comb += [bus.araddr.eq(addr), bus.arlen.eq(burst - 1), bus.arsize.eq(size_code(DW)),
                     bus.arburst.eq(BURST_INCR),
                     bus.arvalid.eq((left_ar != 0) & (outstanding < MAX_OUTSTANDING) & ~fault),
                     self.busy.eq((left_r != 0) & ~fault)]
        ar_take = bus.arvalid & bus.arready
        with m.If(ar_take):
            m.d.sync += [addr.eq(addr + (burst << shift)), left_ar.eq(left_ar - burst)]

        # R: beats side by side into a word; the word leaves with its last beat
        last_of_word = beat == beats - 1
        word = Cat(*[Mux(beat == i, bus.rdata, held[i] if i < len(held) else 0) for i in range(self.max_beats)])
        m.d.comb += [self.out.valid.eq(bus.rvalid & last_of_word & (left_r != 0) & ~fault),
                     self.out.payload.eq(word),
                     bus.rready.eq(((~last_of_word) | self.out.ready) & (left_r != 0) & ~fault)]
        r_take = bus.rvalid & bus.rready
        with m.If(r_take):
            m.d.sync += [left_r.eq(left_r - 1), beat.eq(Mux(last_of_word, 0, beat + 1))]
            for i, h in enumerate(held):
                with m.If(beat == i):
                    m.d.sync += h.eq(bus.rdata)
        m.d.sync += outstanding.eq(outstanding + ar_take - (r_take & bus.rlast))

        # the watchdog: a burst in flight and no beat
        with m.If((outstanding != 0) & ~bus.rvalid & ~fault):
            m.d.sync += quiet.eq(quiet + 1)
            with m.If(quiet == WATCHDOG - 1):
                m.d.sync += self.fault_watchdog.eq(1)
        with m.Else():
            m.d.sync += quiet.eq(0)

        with m.If(self.go):
            total = self.words * self.beats
            m.d.sync += [addr.eq(self.addr), left_ar.eq(total), left_r.eq(total), beat.eq(0), beats.eq(self.beats),
                         quiet.eq(0), self.fault_watchdog.eq(0),
                         self.fault_address.eq(self.addr + (total << shift) > self.limit)]
        return m


class Writer(wiring.Component):
    """One record of ``beats`` beats (``data``, low beat first) to byte address ``addr`` per
    ``go``; ``busy`` until the B response."""

    def __init__(self, data_bits: int, beats: int):
        self.data_bits, self.beats = data_bits, beats
        super().__init__({"go": In(1), "addr": In(ADDR_BITS), "data": In(data_bits * beats), "busy": Out(1),
                          "bus": Out(write_port(data_bits))})

    def elaborate(self, platform):
        m = Module()
        bus, DW = self.bus, self.data_bits
        beat = Signal(range(self.beats))
        data = Signal(DW * self.beats)
        m.d.comb += [bus.awlen.eq(self.beats - 1), bus.awsize.eq(size_code(DW)), bus.awburst.eq(BURST_INCR),
                     bus.wdata.eq(data.word_select(beat, DW)), bus.wstrb.eq(-1), bus.wlast.eq(beat == self.beats - 1),
                     bus.bready.eq(1)]
        with m.FSM():
            with m.State("IDLE"):
                with m.If(self.go):
                    m.d.sync += [bus.awaddr.eq(self.addr), data.eq(self.data), beat.eq(0)]
                    m.next = "AW"
            with m.State("AW"):
                m.d.comb += [bus.awvalid.eq(1), self.busy.eq(1)]
                with m.If(bus.awready):
                    m.next = "W"
            with m.State("W"):
                m.d.comb += [bus.wvalid.eq(1), self.busy.eq(1)]
                with m.If(bus.wready):
                    m.d.sync += beat.eq(beat + 1)
                    with m.If(bus.wlast):
                        m.next = "B"
            with m.State("B"):
                m.d.comb += self.busy.eq(1)
                with m.If(bus.bvalid):
                    m.next = "IDLE"
        return m
