"""The layer engine's instruction set: the descriptor fields (op, source, unit, destination),
the engine's capacities (``LayerConfig``) and the descriptor's bit layout. ``hw.program``
writes programs in it, ``hw.rtl.layer`` runs them, ``hw.cost.timeline`` counts their cycles.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from amaranth import signed
from amaranth.lib import data

from hw.rtl.gemm import PARAM_BITS, GemmConfig
from model import intops
from model.errors import QexitError


class Op(IntEnum):
    MOVE = 0
    GEMM = 1
    END = 2
    SOFTMAX = 3       # started on the softmax side channel; the controller goes on at once


class Src(IntEnum):
    SCRATCH = 0
    ENG_OUT = 1
    ENG_RAW = 2
    PARAM = 3


class Unit(IntEnum):
    NONE = 0
    LN = 1
    GELU = 3
    ADD = 4
    SERIAL = 5
    TABLE = 6         # the activation table (TableUnit), in an engine built with ``table=True``


class Dst(IntEnum):
    SCRATCH = 0
    TRANSPOSE = 1
    ENG_P = 3
    ENG_TB = 4
    LN_P = 5
    HOST = 6
    TABLE = 7         # the activation table's entries, ``lanes`` a word


COUNT = 20                 # bits of every count, stride and length field (< 2**20)
ADDR_BITS = 32             # memory byte addresses
FETCH_CYCLES = 2           # program read + decode


@dataclass(frozen=True)
class LayerConfig:
    """A square array, its GEMM buffers, and the layer engine's own capacities."""
    lanes: int
    scratch_words: int = 4096
    prog_words: int = 256
    max_d: int = 1024          # LayerNorm row (model width)
    max_row: int = 256         # softmax row (tokens)
    max_m: int = 256
    max_k: int = 3072
    max_n: int = 3072
    max_raw_n: int = 256
    max_bias_n: int = 768
    max_raw_words: int = 0     # the int32 buffer's words a bank (0: max_m x max_raw_n's tiles)
    table: bool = False        # an activation-table unit (the MLP activation looked up, ``hw.program``)
    gelu: bool = False         # the computed i-GELU unit (a program that uses Unit.GELU)

    def __post_init__(self):
        for name in ("lanes", "scratch_words", "prog_words"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise QexitError(f"layer engine {name} = {v} must be an integer >= 1")
        self.gemm                                      # checks the GEMM capacities
        if not 1 <= self.max_d <= intops.LN_MAX_D:
            raise QexitError(f"model width {self.max_d} exceeds the LayerNorm unit's {intops.LN_MAX_D}-value rows")
        if not 1 <= self.max_row <= intops.SOFTMAX_MAX_ROW:
            raise QexitError(f"{self.max_row} tokens exceed the softmax unit's {intops.SOFTMAX_MAX_ROW}-score rows")
        if self.scratch_words >= 2 ** COUNT:
            raise QexitError(f"a scratchpad of {self.scratch_words} words exceeds the descriptors' "
                             f"{COUNT}-bit addresses; use a wider array (more lanes) or a smaller model")

    @property
    def gemm(self) -> GemmConfig:
        """The GEMM engine inside: it reads its activations from the scratchpad (no a buffer)."""
        return GemmConfig(self.lanes, self.lanes, self.max_m, self.max_k, self.max_n, self.max_raw_n,
                          self.max_bias_n, self.max_raw_words, raw_banks=2, a_external=max(self.scratch_words, self.p_words))

    @property
    def name(self) -> str:
        return f"qexit_layer_{self.lanes}x{self.lanes}"

    @property
    def p_words(self) -> int:
        """The probability memory: two banks of max_row rows of ceil(max_row / L) words."""
        return 2 * self.max_row * -(-self.max_row // self.lanes)

    @property
    def bus_bits(self) -> int:
        return PARAM_BITS * self.lanes               # the widest stream word: a parameter word


def bus_bits(lanes: int) -> int:
    """The external memory's data width: one weight word (a row of L int8)."""
    return 8 * lanes


def param_beats(lanes: int) -> int:
    """Memory beats per parameter word (``PARAM_BITS`` a lane): a parameter word's footprint
    in memory is this many weight words."""
    return -(-PARAM_BITS * lanes // bus_bits(lanes))


def desc_beats(cfg: LayerConfig) -> int:
    """Memory beats per descriptor word."""
    return -(-desc_layout(cfg).size // bus_bits(cfg.lanes))


def pattern_layout(addr_bits: int) -> data.StructLayout:
    """A 2-D address walk: base + o*ostride + i*istride for o < ocount, i < icount (i inner)."""
    return data.StructLayout({"base": addr_bits, "ocount": COUNT, "ostride": COUNT,
                              "icount": COUNT, "istride": COUNT})


def desc_layout(cfg: LayerConfig) -> data.StructLayout:
    addr = max(1, (cfg.scratch_words - 1).bit_length())
    g = cfg.gemm
    return data.StructLayout({
        "op": 3, "src": 2, "unit": 3, "dst": 3,    # an op outside ``Op`` stops the engine with ``error``
        "m": range(g.max_m + 1), "k": range(g.max_k + 1), "n": range(g.max_n + 1),
        "raw": 1, "token_bias": 1, "w_scratch": 1, "a_base": max(addr, (cfg.p_words - 1).bit_length()),
        "a_stride": COUNT, "a_from_p": 1, "raw_bank": 1,
        "wait": 1,                  # start only when the softmax side channel is idle
        "rd": pattern_layout(addr), "wr": pattern_layout(addr),
        "elems": COUNT,             # row length: LN d, softmax length, the transpose's row
        "groups": COUNT,            # transposed writer: words per transposed row (token groups)
        "total": 24,                # destination beats that end a MOVE
        "words": 24,                # stream words it takes: a PARAM MOVE's parameter words, a GEMM's weight words
        "addr": ADDR_BITS,          # byte offset of those words in the segment's parameter or weight region
        "ln_shift": 6, "ln_eps": intops.LN_EPS_BITS,
        "pre": signed(6), "x0": 8, "sqb": 9, "sqc": 16,
        "gqb": signed(13), "gqc": 23,
        "m_a": intops.MULT_BITS, "m_b": intops.MULT_BITS, "shift": 6,
    })
