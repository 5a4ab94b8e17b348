"""The accelerator's memory image: what the host writes before ``start``, laid out as
``hw.rtl.accelerator`` describes (run table, thresholds, programs, each segment's weight and
parameter regions, each candidate's head block, the images, room for the results).

``memory_image`` builds it from an IntModel, an exit path and a batch of images; ``MemoryImage``
holds it as words of the memory's data width (``8 L`` bits) with the addresses the control
registers take, writes it as a hex file (``save``) and names it by a SHA-256 of its words.
``save_image`` writes that file with ``memory.json`` beside it (the hash, the registers, the
regions, the IntModel's and exit path's digests); ``load_image`` reads both back and refuses, in
one line, an image whose words do not match its hash or that another IntModel, exit path or array
size made, naming the first region (the run table, a program, ...) that differs.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hw import program
from hw.rtl import accelerator as acc
from hw.rtl.head import stream_block
from hw.rtl.isa import bus_bits, desc_beats, desc_layout, param_beats
from model.errors import QexitError
from model.quantize import IntModel, pixels_to_patches
from sim.block import encode, stream_words
from sim.packing import pack_activations

ALIGN = 4096                 # every region starts on a 4 KB boundary


def split(value: int, beats: int, bits: int) -> list[int]:
    """A wide word as ``beats`` memory words, the low bits first."""
    mask = (1 << bits) - 1
    return [(value >> (bits * i)) & mask for i in range(beats)]


def fields_word(values: list[int]) -> int:
    """32-bit fields side by side, the first in the low bits (a run-table entry)."""
    return sum((v & 0xFFFFFFFF) << (32 * i) for i, v in enumerate(values))


@dataclass
class MemoryImage:
    lanes: int
    regions: dict[str, tuple[int, list[int]]] = field(default_factory=dict)   # name -> (byte address, words)
    end: int = 0                 # the next free byte (4 KB aligned)

    @property
    def word_bytes(self) -> int:
        return bus_bits(self.lanes) // 8

    def add(self, name: str, words: list[int]) -> int:
        """Place ``words`` at the next 4 KB boundary; returns its byte address."""
        base = self.end
        self.regions[name] = (base, list(words))
        self.end = base + -(-max(len(words), 1) * self.word_bytes // ALIGN) * ALIGN
        return base

    def address(self, name: str) -> int:
        return self.regions[name][0]

    @property
    def words(self) -> int:
        """The memory's size in words (the results region included)."""
        return self.end // self.word_bytes

    def digest(self) -> str:
        h = hashlib.sha256()
        for name, (base, words) in sorted(self.regions.items(), key=lambda kv: kv[1][0]):
            h.update(f"{name}:{base}:{len(words)}\n".encode())
            h.update(b"".join(w.to_bytes(self.word_bytes, "little") for w in words))
        return h.hexdigest()

    def save(self, path: Path) -> Path:
        """One ``<word address> <word>`` line (hex) per word: what the free-running main loads."""
        step = self.word_bytes
        with open(path, "w") as f:
            for base, words in self.regions.values():
                for i, w in enumerate(words):
                    if w:
                        f.write(f"{base // step + i:x} {w:x}\n")
        return path


@dataclass
class Layout:
    """Where the control registers point: what ``sim.accelerator`` writes to them."""
    table: int
    images: int
    image_stride: int
    results: int
    limit: int
    count: int


def table_entries(im: IntModel, ep, named: dict, programs: dict[str, int], regions: dict[str, tuple[int, int]],
                  plan, image_words: int, thresholds: int, heads: dict[int, tuple[int, int]]) -> list[int]:
    """The run table: the header, then one entry per segment (``hw.rtl.accelerator``)."""
    on = {ep.layers[k]: k for k in program.enabled(ep)}
    candidates = 0 if ep is None else len(ep.layers)
    rows = [[acc.MAGIC, candidates, thresholds, image_words, plan.regions["img"][0]]]
    depth = im.config.depth
    for name, seg in named.items():
        flags = 1 << acc.Flag.VALID
        cand, layer = acc.NO_CANDIDATE, 0
        if name == "embed":
            flags |= 1 << acc.Flag.IMAGE
        elif name == "final":
            flags |= 1 << acc.Flag.FINAL
            layer = depth
        else:
            layer = int(name[1:]) + 1
            cand = on.get(layer, acc.NO_CANDIDATE)
        w_base, q_base = regions[name]
        block, beats = heads.get(cand, (0, 0))
        rows.append([flags | cand << 8 | layer << 16, programs[name], len(seg), w_base, q_base, block, beats])
    return [fields_word(r) for r in rows]


def memory_image(im: IntModel, ep, lanes: int, images: torch.Tensor) -> tuple[MemoryImage, Layout]:
    """The memory image for running ``images`` through the accelerator built for ``im`` and
    ``ep`` (``hw.program.accelerator``)."""
    on = {ep.layers[k] for k in program.enabled(ep)}
    plan, named = program.accelerator_segments(im, lanes, on)
    cfg = program.engine_config(plan, list(named.values()))
    layout = desc_layout(cfg)
    bits, pb, db = bus_bits(lanes), param_beats(lanes), desc_beats(cfg)
    img = MemoryImage(lanes)
    entries = 1 + len(named)
    img.add("table", [0] * entries * acc.entry_beats(lanes))          # filled in below
    th = [] if ep is None else [(t & 0xFFFFFFFF) | int(c) << 32 for t, c in ep.register_words()]
    img.add("thresholds", [w for t in th for w in split(t, acc.threshold_beats(lanes), bits)])
    programs, seen = {}, {}
    for name, seg in named.items():
        words = [w for d in seg for w in split(encode(d, layout), db, bits)]
        key = tuple(words)
        if key not in seen:
            seen[key] = img.add(f"program {name}", words)
        programs[name] = seen[key]
    regions = {}
    for name, seg in named.items():
        w, q = [], []
        for d in seg:
            kind, words = stream_words(d, im, lanes)
            if not words:
                continue
            if kind == "w":
                if d["addr"] != len(w) * bits // 8 or d["words"] != len(words):
                    raise QexitError(f"{d.name}: its weights lie at {len(w) * bits // 8}, not at its addr {d['addr']}")
                w += words
            else:
                if d["addr"] != len(q) * bits // 8 or d["words"] != len(words):
                    raise QexitError(f"{d.name}: its parameters lie at {len(q) * bits // 8}, not at its addr {d['addr']}")
                q += [b for word in words for b in split(word, pb, bits)]
        regions[name] = (img.add(f"weights {name}", w), img.add(f"params {name}", q))
    heads = {}                                                       # candidate -> (block address, beats)
    for k in program.enabled(ep):
        block = stream_block(ep.head, k, lanes, lanes)
        heads[k] = (img.add(f"head {ep.layers[k]}", block), len(block))
    patches = [pack_activations(pixels_to_patches(x[None], im.config.patch)[0], lanes) for x in images]
    per = len(patches[0]) if patches else 0
    base = img.add("images", [w for p in patches for w in p])
    limit = img.end
    results = img.add("results", [0] * max(len(images), 1) * acc.record_beats(lanes))
    img.regions["results"] = (results, [])                           # room only: the accelerator writes it
    table = table_entries(im, ep, named, programs, regions, plan, per, img.address("thresholds"), heads)
    img.regions["table"] = (0, [w for e in table for w in split(e, acc.entry_beats(lanes), bits)])
    return img, Layout(0, base, per * bits // 8, results, limit, len(images))


def exit_path_digest(ep) -> str | None:
    """SHA-256 of what an exit path decides with: its layers, registers and head (None: no exits)."""
    if ep is None:
        return None
    h = hashlib.sha256(json.dumps({"layers": list(ep.layers), "registers": list(ep.registers)}).encode())

    def walk(x):
        if isinstance(x, dict):
            for k in sorted(x):
                h.update(str(k).encode())
                walk(x[k])
        elif isinstance(x, (list, tuple)):
            for v in x:
                walk(v)
        elif isinstance(x, torch.Tensor):
            h.update(f"{x.dtype}:{tuple(x.shape)}".encode() + x.contiguous().numpy().tobytes())
        else:
            h.update(repr(x).encode())
    walk(ep.head.state())
    return h.hexdigest()


def save_image(folder: Path, img: MemoryImage, layout: Layout, im: IntModel, ep) -> dict:
    """``memory.hex`` and ``memory.json`` in ``folder``; returns what memory.json holds."""
    img.save(folder / "memory.hex")
    info = {"sha256": img.digest(), "lanes": img.lanes, "words": img.words, "word_bytes": img.word_bytes,
            "intmodel_digest": im.digest(), "exit_path_digest": exit_path_digest(ep),
            "registers": {r.name: v for r, v in register_writes(layout)},
            "regions": {name: {"address": base, "words": len(words)} for name, (base, words) in img.regions.items()}}
    (folder / "memory.json").write_text(json.dumps(info, indent=2) + "\n")
    return info


def register_writes(layout: Layout) -> list[tuple[int, int]]:
    """The control registers in the order the host writes them; the last starts the run."""
    R = acc.Reg
    return [(R.IMAGES, layout.count), (R.TABLE, layout.table), (R.IMAGES_BASE, layout.images),
            (R.IMAGE_STRIDE, layout.image_stride), (R.RESULTS, layout.results), (R.LIMIT, layout.limit),
            (R.CTRL, 1)]


def load_image(folder: Path, im: IntModel, ep, lanes: int) -> tuple[MemoryImage, Layout]:
    """The image ``save_image`` wrote in ``folder``, checked against its hash and against the one
    ``im``, ``ep`` and ``lanes`` give (every region but the images and the results)."""
    folder = Path(folder)
    try:
        info = json.loads((folder / "memory.json").read_text())
        hexlines = (folder / "memory.hex").read_text().split("\n")
        regs = info["registers"]
        img = MemoryImage(int(info["lanes"]))
        for name, r in sorted(info["regions"].items(), key=lambda kv: kv[1]["address"]):
            img.regions[name] = (int(r["address"]), [0] * int(r["words"]))
        img.end = int(info["words"]) * img.word_bytes
        where = {}
        for name, (base, words) in img.regions.items():
            for i in range(len(words)):
                where[base // img.word_bytes + i] = (name, i)
        for line in hexlines:
            if line.strip():
                a, w = (int(x, 16) for x in line.split())
                name, i = where[a]
                img.regions[name][1][i] = w
        layout = Layout(regs["TABLE"], regs["IMAGES_BASE"], regs["IMAGE_STRIDE"], regs["RESULTS"], regs["LIMIT"],
                        regs["IMAGES"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise QexitError(f"{folder} is not a memory image that `qexit rtl image` wrote ({type(err).__name__}: "
                         f"{err}); write one with `qexit rtl image --out {folder}`") from None
    if img.digest() != info["sha256"]:
        raise QexitError(f"{folder}/memory.hex does not match the SHA-256 in memory.json (it was changed or cut "
                         f"short); write it again with `qexit rtl image`")
    for what, got, want in (("IntModel", info["intmodel_digest"], im.digest()),
                            ("exit path", info["exit_path_digest"], exit_path_digest(ep)),
                            ("array", f"{img.lanes}x{img.lanes}", f"{lanes}x{lanes}")):
        if got != want:
            raise QexitError(f"the memory image in {folder} was built for another {what} ({str(got)[:16]}, not "
                             f"{str(want)[:16]}); write it with `qexit rtl image` for this model and array")
    c = im.config
    mine, _ = memory_image(im, ep, lanes, torch.zeros(layout.count, c.channels, c.image_size, c.image_size))
    for name, (base, words) in mine.regions.items():
        if name not in ("images", "results") and img.regions.get(name) != (base, words):
            raise QexitError(f"the memory image in {folder}: its {name} region is not the one this IntModel and "
                             f"exit path give (written for another model); write it again with `qexit rtl image`")
    return img, layout
