"""The precision-scalable systolic array against the INT8 one, through
yosys (``synth_ecp5``) and nextpnr-ecp5 on the LFE5U-85F, out of context (``hw.tools.synth``).

``hw.rtl.pe.ScalablePE`` packs two 4-bit weights into its one multiplier's operand, so that a
packed row does two 4 x 4 MACs a PE; ``hw.cost`` (``Machine.scalable``) prices what that buys a 4-bit block.
This prints what the PE costs in the fabric: LUT4s, flip-flops, MULT18X18D blocks and Fmax of
the bare R x R array, both kinds, and writes ``benchmarks/results/bench_scalable_pe.json``.
The GEMM engine's controller and output path for packed GEMMs are not built, so this is the
array alone. Results are cached like ``qexit synth``'s.

Run: .venv/bin/python benchmarks/bench_scalable_pe.py [--sizes 4,8] [--freq 100]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from amaranth import Module, Signal
from amaranth.lib import wiring

from hw.rtl.emit import to_verilog
from hw.tools.synth import synthesize
from hw.rtl.systolic import SystolicArray

OUT = Path(__file__).parent / "results" / "bench_scalable_pe.json"


class Registered(wiring.Component):
    """The array with every port registered, as it sits inside an engine: timing paths start
    and end at flip-flops (yosys 0.70's ABC9 also trips an internal assert on the bare array)."""

    def __init__(self, array: SystolicArray):
        self.array = array
        super().__init__(array.signature)

    def elaborate(self, platform):
        m = Module()
        m.submodules.array = self.array
        for name, member in self.signature.members.items():
            outer, inner = getattr(self, name), getattr(self.array, name)
            reg = Signal.like(inner, name=f"{name}_q")
            if member.flow == wiring.In:
                m.d.sync += reg.eq(outer)
                m.d.comb += inner.eq(reg)
            else:
                m.d.sync += reg.eq(inner)
                m.d.comb += outer.eq(reg)
        return m


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", default="4,8", help="array sizes R (R x R), comma-separated")
    p.add_argument("--freq", type=float, default=100.0, help="target clock, MHz")
    p.add_argument("--out", type=Path, default=OUT)
    args = p.parse_args()
    rows = []
    for n in (int(x) for x in args.sizes.split(",")):
        for scalable in (False, True):
            top = f"array_{n}x{n}_{'scalable' if scalable else 'int8'}"
            t = time.time()
            r = synthesize(top, to_verilog(Registered(SystolicArray(n, n, scalable)), top), top, args.freq)
            row = {"array": f"{n}x{n}", "scalable": scalable, "luts": r.luts, "ffs": r.ffs, "dsps": r.dsps,
                   "brams": r.brams, "fmax_mhz": r.fmax_mhz, "fits": r.fits, "error": r.error,
                   "yosys_seconds": r.yosys_seconds, "nextpnr_seconds": r.nextpnr_seconds,
                   "seconds": round(time.time() - t, 1)}
            rows.append(row)
            print(f"{row['array']:>6} {'scalable' if scalable else 'int8':>8}: {r.luts:>6} LUT4 {r.ffs:>6} FF "
                  f"{r.dsps:>4} DSP  Fmax {r.fmax_mhz} MHz" + (f"  ({r.error})" if r.error else ""), flush=True)
    for n in sorted({r["array"] for r in rows}):
        a, b = (next(r for r in rows if r["array"] == n and r["scalable"] == s) for s in (False, True))
        print(f"{n}: scalable / int8: LUT4 {b['luts'] / max(a['luts'], 1):.2f}x, FF {b['ffs'] / max(a['ffs'], 1):.2f}x, "
              f"DSP {b['dsps']} vs {a['dsps']}, Fmax {b['fmax_mhz']} vs {a['fmax_mhz']} MHz")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"device": "LFE5U-85F", "target_mhz": args.freq, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
