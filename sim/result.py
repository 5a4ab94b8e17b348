"""The one result type of every verify in ``sim``: what was compared, how much of it matched,
the cycles, and the records the figures come from.

``matched`` and ``total`` count the integers compared with a reference (a verify says which:
output words, distinct integers, decisions or images); ``cycles_measured`` and
``cycles_predicted`` are the summed cycles it compared with a cycle model (None where it
measured none); ``records`` holds one entry per case, segment, image or decision, as plain
JSON values; ``figures`` holds the verify's own figures (the unit's name, the utilization,
the images whose exit matched, ...), which read as attributes too (``result.utilization``).

``to_dict`` and ``from_dict`` carry a result through JSON (``sim.dist`` writes each shard's
result so); ``merge`` joins results of the same check made on parts of the input.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class Result:
    check: str                                   # what was verified: "gemm", "unit", "block", "head", ...
    matched: int = 0
    total: int = 0
    passed: bool = False
    cycles_measured: int | None = None
    cycles_predicted: int | None = None
    records: list[dict] = field(default_factory=list)
    first_mismatches: list[dict] = field(default_factory=list)
    figures: dict = field(default_factory=dict)
    simulator: str = ""
    build_seconds: float = 0.0
    sim_seconds: float = 0.0
    log: str = ""

    def __getattr__(self, name: str):
        """A figure of this verify, read as an attribute (only names that are not fields)."""
        figures = self.__dict__.get("figures")
        if figures is not None and name in figures:
            return figures[name]
        raise AttributeError(f"the {self.__dict__.get('check', '?')!r} result has no field or figure {name!r}")

    @property
    def mismatches(self) -> int:
        return self.total - self.matched

    def summary(self) -> dict:
        """The headline figures, flat keys for a summary.json: the counts, the cycles where
        measured, the figures, the first mismatches, the simulator and its seconds."""
        out = {"matched": self.matched, "total": self.total, "mismatches": self.mismatches, "passed": self.passed}
        if self.cycles_measured is not None:
            out.update(cycles_measured=self.cycles_measured, cycles_predicted=self.cycles_predicted)
        out.update(self.figures)
        if self.first_mismatches:
            out["first_mismatches"] = self.first_mismatches[:5]
        if self.simulator:
            out["simulator"] = self.simulator
        if self.build_seconds or self.sim_seconds:
            out.update(build_seconds=round(self.build_seconds, 1), sim_seconds=round(self.sim_seconds, 1))
        return out

    def to_dict(self) -> dict:
        """Every field, as JSON values (records and figures are JSON values already)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Result:
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"not fields of a verify result: {sorted(unknown)}")
        return cls(**d)

    @classmethod
    def merge(cls, parts: list[Result]) -> Result:
        """Results of one check on parts of the input, as one: the counts, cycles and seconds
        summed, the records, first mismatches and logs in part order; passed when every part
        passed. Figures must be the same in every part (derive the others from the records)."""
        if not parts:
            raise ValueError("no results to merge")
        first = parts[0]
        if any(p.check != first.check or p.figures != first.figures or p.simulator != first.simulator for p in parts):
            raise ValueError("only results of the same check, with the same figures and simulator, merge")
        timed = [p for p in parts if p.cycles_measured is not None]
        return cls(first.check, sum(p.matched for p in parts), sum(p.total for p in parts),
                   all(p.passed for p in parts),
                   sum(p.cycles_measured for p in timed) if timed else None,
                   sum(p.cycles_predicted for p in timed) if timed else None,
                   [r for p in parts for r in p.records], [m for p in parts for m in p.first_mismatches],
                   dict(first.figures), first.simulator, sum(p.build_seconds for p in parts),
                   sum(p.sim_seconds for p in parts), "\n\n".join(p.log for p in parts if p.log))
