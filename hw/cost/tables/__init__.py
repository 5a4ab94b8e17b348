"""Energy tables: operation and access energies in picojoules, each a data file that cites its
source and says what it prices (``kind``: "45 nm ASIC", ...). ``horowitz_45nm.json`` is the
default; ``fpga_ecp5_scaled.json`` (``FPGA``) is the same table with its on-chip entries scaled
by the FPGA/ASIC dynamic-power gap, an estimate shown beside it. ``load`` reads one and refuses
a table with missing keys by name; ``EnergyTable.sram_read`` gives an SRAM read of ``bits`` from
an array of ``size_bytes``; ``EnergyTable.describe`` is how reports name a table."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from model.errors import QexitError

DEFAULT = Path(__file__).parent / "horowitz_45nm.json"
FPGA = Path(__file__).parent / "fpga_ecp5_scaled.json"
ENERGIES = ("int8_add", "int32_add", "int8_mult", "int32_mult", "sram_read_64b", "dram_read_64b")
KEYS = ("source", "unit", *ENERGIES, "kind")
ON_CHIP = ("int8_add", "int32_add", "int8_mult", "int32_mult", "sram_read_64b")     # dram_read_64b is off-chip
TEXT_MAX = 60          # kind and label are short: they go into plot labels


@dataclass(frozen=True)
class EnergyTable:
    name: str
    source: str
    values: dict
    kind: str = "unspecified"
    label: str = ""

    def __post_init__(self):
        if not self.label:
            object.__setattr__(self, "label", f"{self.name}, {self.kind}")

    def __getitem__(self, key: str) -> float:
        return float(self.values[key])

    def describe(self) -> dict:
        """The table as a report's summary.json names it."""
        return {"name": self.name, "kind": self.kind, "label": self.label, "source": self.source}

    @property
    def int8_mac(self) -> float:
        """An int8 multiply whose product joins a 32-bit sum."""
        return self["int8_mult"] + self["int32_add"]

    def sram_read(self, size_bytes: int, bits: int = 64) -> float:
        """One read of ``bits`` from an SRAM of ``size_bytes``: the 64-bit figures interpolated on
        log2(size), held flat outside the table's sizes, scaled by bits / 64."""
        points = sorted((int(k), float(v)) for k, v in self.values["sram_read_64b"].items())
        x = math.log2(max(size_bytes, 1))
        xs = [math.log2(s) for s, _ in points]
        if x <= xs[0]:
            e = points[0][1]
        elif x >= xs[-1]:
            e = points[-1][1]
        else:
            i = next(j for j in range(1, len(xs)) if x <= xs[j])
            t = (x - xs[i - 1]) / (xs[i] - xs[i - 1])
            e = points[i - 1][1] + t * (points[i][1] - points[i - 1][1])
        return e * bits / 64

    def dram_bytes(self, n: int) -> float:
        """Reading ``n`` bytes from DRAM, at the 64-bit figure per 8 bytes."""
        return self["dram_read_64b"] * n / 8


def _short_text(value) -> bool:
    return isinstance(value, str) and value.strip() != "" and "\n" not in value and len(value) <= TEXT_MAX


def load(path: Path | str | None = None) -> EnergyTable:
    """Read an energy table (default: Horowitz, ISSCC 2014, 45 nm ASIC)."""
    path = DEFAULT if path is None else Path(path)
    try:
        values = json.loads(path.read_text())
    except FileNotFoundError:
        raise QexitError(f"no energy table at {path}; pass a JSON file like {DEFAULT.name}") from None
    except (OSError, ValueError) as err:
        raise QexitError(f"energy table {path} is not readable JSON ({err})") from None
    if not isinstance(values, dict):
        raise QexitError(f"energy table {path} must be a JSON object of energies")
    missing = [k for k in KEYS if k not in values]
    if missing:
        raise QexitError(f"energy table {path} misses {', '.join(missing)}; every table needs {', '.join(KEYS)}")
    if values["unit"] != "pJ":
        raise QexitError(f"energy table {path} is in {values['unit']!r}; give its energies in pJ")
    bad = [k for k in ENERGIES if k != "sram_read_64b" and not (isinstance(values[k], (int, float)) and values[k] > 0)]
    sram = values["sram_read_64b"]
    if not isinstance(sram, dict) or not sram or any(
            not str(k).isdigit() or not isinstance(v, (int, float)) or not v > 0 for k, v in sram.items()):
        bad.append("sram_read_64b")
    if bad:
        raise QexitError(f"energy table {path}: {', '.join(bad)} must be positive energies in pJ "
                         f"(sram_read_64b: {{size in bytes: pJ}})")
    text = [k for k in ("kind", "label") if k in values and not _short_text(values[k])]
    if text:
        raise QexitError(f"energy table {path}: {' and '.join(text)} must be one line of 1 to {TEXT_MAX} characters "
                         f"saying what the table prices (e.g. \"kind\": \"45 nm ASIC\")")
    if not isinstance(values["source"], str) or not values["source"].strip():
        raise QexitError(f"energy table {path}: source must cite where its energies come from")
    return EnergyTable(values.get("name", path.stem), values["source"], values, values["kind"],
                       values.get("label", ""))
