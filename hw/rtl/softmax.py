"""The streaming softmax unit: ``model.intops.softmax`` over one attention row at a time.

``SoftmaxUnit`` takes ``lanes`` int32 scores per ``inp`` beat and gives ``lanes`` int8
probabilities (0..127, at scale 2**-7) per ``out`` beat, in input order. A row of T scores
spans W = ceil(T / lanes) beats; the unused lanes of its last beat are ignored on the way in
and zero on the way out. Each phase below handles a beat per cycle, every lane in parallel;
the lanes' maxima and their e values are combined by registered trees of
``tree_levels(lanes)`` = ceil(log2(lanes)) levels (none for one lane). Its constants are input
ports that the host (or the layer controller) holds steady while a row is in flight: the row
length ``length`` (T, 1..max_row) and the i-exp constants ``pre``, ``x0``, ``qb``, ``qc`` (within
``intops.SOFTMAX_PRE``/``X0``/``QB``/``QC`` with qb > x0, as ``intops.check_softmax_params``
accepts). Out-of-range constants or a length outside 1..max_row give unspecified results.

A row goes through these phases, one after the other (the unit then takes the next row):

* LOAD (W cycles): accept W beats and write them to the row buffer (an Amaranth ``Memory`` of
  ceil(max_row / lanes) words of ``lanes`` 32-bit values). Each accepted beat's lanes are
  registered (a lane past the row end as the int32 minimum), their maximum formed by a
  registered tree over the lanes, and the running row maximum (int32) updated from it.
* MAX (``MAX_WAIT(lanes)`` = max(levels - 1, 0) cycles): the max tree drains, so the row
  maximum is final when the first score reaches EXP's subtraction.
* EXP (W + ``EXP_STAGES`` = W + 11 cycles): read the scores back (one word per cycle) through an
  eleven-stage pipeline, a register each, and write each e over its score:

  - 1, the synchronous read; 2, the read registered: score s (int32);
  - 3: d = s - max in [-(2**32 - 1), 0] (33 bits);
  - 4: d = max(d, d_min), with (d_min, x_min) = ``intops.exp_floor(pre, x0)`` formed from the
    ports: x_min = -30 x0, d_min = x_min << pre (pre >= 0) or -((30 x0) >> -pre) - 1 (pre < 0);
  - 5: x = d >> pre (floor) or d << -pre (64 bits);
  - 6: nx = -max(x, x_min) = min(-x, 30 x0) in [0, 3960] (12 bits);
  - 7, 8: z = nx // x0 in [0, 30] (5 bits) by a five-step restoring division, two steps a
    stage; its remainder is -p = nx - z x0 in [0, x0) (8 bits);
  - 9: the last step, and u = p + qb = qb - (-p) in [1, 256] (9 bits);
  - 10: u**2;
  - 11: e = (u**2 + qc) >> z in [0, 2**17) (``intops.EXP_BITS``), written to the buffer.

  The row sum takes each written word's e values (a lane past the row end as 0) through a
  registered adder tree over the lanes into sum (sum < max_row * 2**17 <= 2**31: 31 bits for
  max_row = 2**14).
* SUM (levels cycles; none for one lane): the sum tree drains into sum.
* DIV (``DIV_STEPS`` = 19 cycles): r = floor(2**32 / sum) by a sequential restoring division
  (one quotient bit per cycle, remainder < sum: 31 bits, shifted 32; each step is one
  subtraction, 2 rem - sum, whose sign is the quotient bit). sum >= qb**2 + qc >= 2**14 +
  2**13 (the row maximum's e), so 2**32 >> 19 = 2**13 < sum: the division starts from
  remainder 2**13 and needs only the 19 low quotient bits, r <= 2**18 (19 bits).
* OUT (W + ``OUT_STAGES`` = W + 4 cycles without back-pressure): four stages, the read, the
  read registered (e), the product e * r (e * r <= 2**32: 36 bits), the output register with
  p = min(127, (e * r + 2**24) >> 25) (``intops.round_shift`` by RECIP_BITS - PROB_BITS = 25,
  then saturated at 127; with ``prob_bits`` = b, the exit gate's 15, the shift is 32 - b and
  the saturation 2**b - 1, on signed(b + 1) lanes), streamed with the stall rule of
  ``hw.rtl.units.Pipeline``: the read port and the stages advance together when
  ``~out.valid | out.ready``.

A row therefore takes W + MAX_WAIT + (W + 11 + levels) + 19 + (W + 4) cycles when the input
never waits and the output is never stalled (``row_cycles``): 3W + 34 for one lane, 3W + 33 +
2 levels for more. ``inp.ready`` is high only in LOAD.
"""
from __future__ import annotations

from types import SimpleNamespace

from amaranth import Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from hw.rtl.gemm import clamp
from hw.rtl.units import Pipeline, check_lanes
from model import intops
from model.errors import QexitError

DIV_STEPS = 19                                          # quotient bits of floor(2**32 / sum)
X_BITS = (intops.EXP_MAX_SHIFT * intops.SOFTMAX_X0[1]).bit_length()     # 12: nx = -x in [0, 3960]

# sum >= SOFTMAX_QB[0]**2 + SOFTMAX_QC[0] must exceed the division's starting remainder.
assert intops.RECIP_BITS - DIV_STEPS < (intops.SOFTMAX_QB[0] ** 2 + intops.SOFTMAX_QC[0]).bit_length()


def tree_levels(lanes: int) -> int:
    """Levels of the lanes' max and sum trees (one pipeline stage each)."""
    return (lanes - 1).bit_length()


MAX_WAIT = lambda lanes: max(tree_levels(lanes) - 1, 0)      # noqa: E731  MAX phase: cycles after LOAD
EXP_STAGES = 11                                  # EXP: a score's read to its e written (module docstring)
OUT_STAGES = 4                                   # OUT: a read to its probability on ``out``


def row_cycles(length: int, lanes: int = 1) -> int:
    """Clock cycles of one row of ``length`` scores (W = ceil(length / lanes) beats) with no
    input gaps and no output stalls."""
    w = -(-length // lanes)
    lv = tree_levels(lanes)
    return w + MAX_WAIT(lanes) + (w + EXP_STAGES + lv) + DIV_STEPS + (w + OUT_STAGES)


class SoftmaxUnit(wiring.Component):
    """int32 scores (``lanes`` per beat) → int8 probabilities 0..127 (``lanes`` per beat), row by row.

    A row of T scores spans W = ceil(T / lanes) beats; the unused lanes of its last beat are
    ignored on the way in and are zero on the way out.

    Ports: ``inp`` (int32 lanes), ``out`` (int8 lanes), ``length`` (1..max_row),
    ``pre`` signed(6), ``x0`` unsigned(8), ``qb`` unsigned(9), ``qc`` unsigned(16).
    """

    def __init__(self, max_row: int = 256, lanes: int = 1, prob_bits: int = intops.PROB_BITS):
        if not isinstance(prob_bits, int) or not 1 <= prob_bits <= 15:
            raise QexitError(f"softmax prob_bits = {prob_bits} must be an integer in [1, 15]")
        if not isinstance(max_row, int) or not 1 <= max_row <= intops.SOFTMAX_MAX_ROW:
            raise QexitError(f"softmax max_row = {max_row} must be an integer in "
                             f"[1, {intops.SOFTMAX_MAX_ROW}]")
        check_lanes(lanes)
        self.max_row, self.lanes, self.prob_bits = max_row, lanes, prob_bits
        super().__init__({
            "inp": In(stream.Signature(data.ArrayLayout(signed(32), lanes))),
            "out": Out(stream.Signature(data.ArrayLayout(signed(prob_bits + 1), lanes))),
            "length": In(unsigned(max_row.bit_length())),
            "pre": In(signed(max(-intops.SOFTMAX_PRE[0], intops.SOFTMAX_PRE[1]).bit_length() + 1)),
            "x0": In(unsigned(intops.SOFTMAX_X0[1].bit_length())),
            "qb": In(unsigned(intops.SOFTMAX_QB[1].bit_length())),
            "qc": In(unsigned(intops.SOFTMAX_QC[1].bit_length())),
        })

    def elaborate(self, platform):
        m = Module()
        L = self.lanes
        lv = tree_levels(L)
        words = -(-self.max_row // L)
        pos_shape = unsigned((self.max_row + L).bit_length())
        sum_bits = (self.max_row * (2 ** intops.EXP_BITS - 1)).bit_length()   # <= 31

        # the row buffer: scores (LOAD), overwritten by their e (EXP), read out (OUT)
        m.submodules.buf = buf = memory.Memory(shape=data.ArrayLayout(unsigned(32), L), depth=words, init=[])
        wr, rd = buf.write_port(), buf.read_port()

        cnt = Signal(range(words + 1))  # buffer writes so far in this phase (LOAD, EXP)
        cnt_e = Signal(pos_shape)       # ... times L: the position of the word being written
        idx = Signal(range(words + 1))  # buffer reads issued so far in this phase (EXP, OUT)
        idx_e = Signal(pos_shape)
        row_max = Signal(signed(32), init=intops.INT32_MIN)
        total = Signal(unsigned(sum_bits))
        recip = Signal(unsigned(DIV_STEPS))
        rem = Signal(unsigned(sum_bits))
        step = Signal(range(max(DIV_STEPS, lv + EXP_STAGES + 1)))

        def lane_valid(pos, c):        # lane c of the word at position pos holds a score of the row
            return pos + c < self.length

        def tree(values, op, name, width, init=0):
            """``op`` over ``values``, each level of the tree registered (``init`` after reset)."""
            level = 0
            while len(values) > 1:
                nxt = []
                for i in range(0, len(values), 2):
                    r = Signal(width, name=f"{name}{level}_{i // 2}", init=init)
                    m.d.sync += r.eq(op(values[i], values[i + 1]) if i + 1 < len(values) else values[i])
                    nxt.append(r)
                values, level = nxt, level + 1
            return values[0]

        # ---- constants from the ports: exp_floor(pre, x0) and the shift amounts
        neg = self.pre < 0
        rshift = self.pre.as_unsigned()[:5]          # pre when pre >= 0
        lshift = (-self.pre)[:5]                      # -pre when pre < 0
        x30 = Signal(X_BITS)                          # -x_min = 30 x0 <= 3960
        d_min = Signal(signed(X_BITS + 32 + 1))       # x_min << pre or -((-x_min) >> -pre) - 1
        m.d.comb += [x30.eq(self.x0 * intops.EXP_MAX_SHIFT),
                     d_min.eq(Mux(neg, -(x30 >> lshift) - 1, -(x30 << rshift)))]

        # ---- LOAD's running maximum: the accepted beat's lanes registered (a lane past the row
        # is the int32 minimum), a registered tree over the lanes, then the row maximum
        taking = Signal()
        first = []
        for c in range(L):
            r = Signal(signed(32), name=f"in{c}", init=intops.INT32_MIN)
            m.d.sync += r.eq(Mux(taking & lane_valid(cnt_e, c), self.inp.payload[c], intops.INT32_MIN))
            first.append(r)
        beat_max = tree(first, lambda a, b: Mux(a > b, a, b), "max", signed(32), intops.INT32_MIN)
        m.d.sync += row_max.eq(Mux(beat_max > row_max, beat_max, row_max))

        # ---- OUT: the read port, its registered data, the product, then the output register,
        # under one stall rule
        issue = SimpleNamespace(valid=Signal(), ready=Signal())
        pipe = Pipeline(m, issue, self.out, OUT_STAGES)
        pos1 = pipe.stage(idx_e, pos_shape, "pos1")
        pos2 = pipe.stage(pos1, pos_shape, "pos2")
        pos3 = pipe.stage(pos2, pos_shape, "pos3")
        shift = intops.RECIP_BITS - self.prob_bits
        for c in range(L):
            e_out = pipe.stage(rd.data[c][:intops.EXP_BITS], unsigned(intops.EXP_BITS), f"e_out{c}")
            prod = pipe.stage(e_out * recip, unsigned(intops.EXP_BITS + DIV_STEPS), f"prod{c}")
            prob = (prod + (1 << (shift - 1))) >> shift
            value = Mux(lane_valid(pos3, c), clamp(prob, 0, 2 ** self.prob_bits - 1), 0)
            m.d.comb += self.out.payload[c].eq(pipe.stage(value, signed(self.prob_bits + 1), f"prob{c}"))
        last_out = pipe.stage(pipe.stage(pipe.stage(pipe.stage(idx_e + L >= self.length, name="last1"),
                                                    name="last2"), name="last3"), name="last4")

        # ---- EXP pipeline, a stage a register (module docstring): v[i] marks a score in stage i
        v = [Signal(name=f"v{i}") for i in range(EXP_STAGES)]
        m.d.sync += [b.eq(a) for a, b in zip(v, v[1:])] + [v[0].eq(0)]
        written = v[EXP_STAGES - 1]                      # e10 holds the e of a read score
        e_word = Signal(data.ArrayLayout(unsigned(32), L))
        masked = []
        for c in range(L):
            def reg(value, shape, name):
                r = Signal(shape, name=f"{name}_{c}")
                m.d.sync += r.eq(value)
                return r
            s1 = reg(rd.data[c].as_signed(), signed(32), "s1")                 # the read, registered
            d2 = reg(s1 - row_max, signed(33), "d2")                           # [-(2**32 - 1), 0]
            dc3 = reg(Mux(d2 < d_min, d_min, d2), signed(33), "dc3")            # max(d, d_min)
            x4 = reg(Mux(neg, dc3 << lshift, dc3 >> rshift), signed(64), "x4")
            nx5 = reg(Mux(x4 < -x30, x30, -x4), X_BITS, "nx5")               # [0, 30 x0]
            r, z = nx5, []                                                      # nx // x0, 5 steps
            for i in reversed(range(5)):
                t = self.x0 << i
                ge = Signal(name=f"ge{i}_{c}")
                nr = Signal(X_BITS, name=f"r{i}_{c}")
                m.d.comb += [ge.eq(r >= t), nr.eq(Mux(ge, r - t, r))]
                z.append(ge)
                r = nr
                if i in (3, 1):                                                 # two steps a stage
                    r = reg(r, X_BITS, f"rr{i}")
                    z = [reg(b, 1, f"z{i}_{j}") for j, b in enumerate(z)]
            z8 = reg(Cat(*reversed(z)), 5, "z8")
            u8 = reg(self.qb - r, 9, "u8")                                      # p + qb in [1, 256]
            sq9 = reg(u8 * u8, 17, "sq9")
            z9 = reg(z8, 5, "z9")
            e10 = reg((sq9 + self.qc) >> z9, intops.EXP_BITS, "e10")
            m.d.comb += e_word[c].eq(e10)
            masked.append(Mux(written & lane_valid(cnt_e, c), e10, 0))
        # the row sum: a registered tree over the lanes (zero when nothing is written), then total
        e_sum = tree(masked, lambda a, b: a + b, "sum", unsigned(intops.EXP_BITS + lv))
        m.d.sync += total.eq(total + e_sum)
        m.d.comb += [rd.addr.eq(idx), rd.en.eq(pipe.advance), wr.addr.eq(cnt)]

        with m.FSM():
            with m.State("LOAD"):
                m.d.comb += [self.inp.ready.eq(1), taking.eq(self.inp.valid), wr.data.eq(self.inp.payload),
                             wr.en.eq(self.inp.valid)]
                with m.If(self.inp.valid):
                    m.d.sync += [cnt.eq(cnt + 1), cnt_e.eq(cnt_e + L)]
                    with m.If(cnt_e + L >= self.length):
                        m.d.sync += [cnt.eq(0), cnt_e.eq(0), idx.eq(0), idx_e.eq(0), total.eq(0), step.eq(0)]
                        m.next = "MAX" if MAX_WAIT(L) else "EXP"
            with m.State("MAX"):                                # the max tree drains into row_max
                m.d.sync += step.eq(step + 1)
                with m.If(step == MAX_WAIT(L) - 1):
                    m.d.sync += step.eq(0)
                    m.next = "EXP"
            with m.State("EXP"):
                m.d.comb += rd.en.eq(1)
                with m.If(idx_e < self.length):
                    m.d.sync += [v[0].eq(1), idx.eq(idx + 1), idx_e.eq(idx_e + L)]
                m.d.comb += [wr.data.eq(e_word), wr.en.eq(written)]
                with m.If(written):
                    m.d.sync += [cnt.eq(cnt + 1), cnt_e.eq(cnt_e + L)]
                    with m.If(cnt_e + L >= self.length):
                        m.d.sync += [cnt.eq(0), cnt_e.eq(0), step.eq(0)]
                        m.next = "SUM" if lv else "DIV0"
            with m.State("SUM"):                                # the sum tree drains into total
                m.d.sync += step.eq(step + 1)
                with m.If(step == lv - 1):
                    m.next = "DIV0"
            with m.State("DIV0"):                               # total is final: start the division
                m.d.sync += [idx.eq(0), idx_e.eq(0), step.eq(1), row_max.eq(intops.INT32_MIN),
                             rem.eq(1 << (intops.RECIP_BITS - DIV_STEPS)), recip.eq(0)]
                self._div_step(m, rem, total, recip, Const(1 << (intops.RECIP_BITS - DIV_STEPS), sum_bits), sum_bits)
                m.next = "DIV"
            with m.State("DIV"):
                self._div_step(m, rem, total, recip, rem, sum_bits)
                m.d.sync += step.eq(step + 1)
                with m.If(step == DIV_STEPS - 1):
                    m.next = "OUT"
            with m.State("OUT"):
                m.d.comb += issue.valid.eq(idx_e < self.length)
                with m.If(issue.valid & pipe.advance):
                    m.d.sync += [idx.eq(idx + 1), idx_e.eq(idx_e + L)]
                with m.If(self.out.valid & self.out.ready & last_out):
                    m.d.sync += [idx.eq(0), idx_e.eq(0)]
                    m.next = "LOAD"
        return m

    @staticmethod
    def _div_step(m, rem, total, recip, current, sum_bits):
        """One restoring step of floor(2**32 / total): rem*2 - total as one subtraction, its sign
        the quotient bit."""
        shifted = Cat(Const(0, 1), current)[:sum_bits + 1]             # rem * 2 < 2 * sum
        diff = Signal(signed(sum_bits + 2), name="div_diff")
        m.d.comb += diff.eq(shifted - total)
        ge = diff >= 0
        m.d.sync += [rem.eq(Mux(ge, diff[:sum_bits], shifted[:sum_bits])), recip.eq(Cat(ge, recip))]
