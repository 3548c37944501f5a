"""What every file-reading surface must do with any input, checked by the fuzz targets.

The oracle is one rule: an input ends in success or in one InputError naming the file and the
position in it, on one line (``mhp SUBCOMMAND: FILE: POSITION: message`` once the CLI prefixes
it); anything else (another exception, a hang, unbounded memory) is a bug. Each ``check_*``
function takes one fuzz input and raises when the rule breaks (AssertionError for a wrong answer,
or the unexpected exception itself). The harnesses (``fuzz/*_fuzzer.py``) and the campaign's triage
(fuzz/campaign.py) share them, so a crash artifact is re-checked exactly as it was found.
"""

from __future__ import annotations

import atexit
import ctypes
import io
import os
import select
import shutil
import signal
import struct
import tempfile
import threading
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from replay.export import write_chrome
from replay.layout import block_runs, format_runs, format_zones, zone_table
from replay.model.profiles import get_profile
from replay.plot import grid, sample
from replay.replayer import model_at, replay_file
from replay.simulate import Simulation, simulate, write_trace
from traces.codec import encode_record
from traces.errors import InputError
from traces.events import AddMemory, BootBlocks, Loss, fields_of
from traces.files import compile_text, dump_trace, repair, verify
from traces.header import CHUNK_HEADER, CHUNK_MAGIC, FIXED_HEADER_SIZE, INDEX_MAGIC, MAGIC, MAX_CHUNK, TRAILER_MAGIC, chunk_crc
from traces.reader import TraceReader
from traces.scenario import load_scenario
from traces.text import NAMES, dump, parse_text

PR_SET_PDEATHSIG = 1


def die_with_parent(sig: int = signal.SIGKILL) -> None:
    """Ask Linux to send ``sig`` to this process when its parent dies (prctl PR_SET_PDEATHSIG);
    safe between fork and exec (the campaign's preexec_fn)."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the campaign's process group is all there is
        return
    if os.getppid() == 1:  # the parent died before the request took effect
        os.kill(os.getpid(), sig)


def die_with_campaign() -> None:
    """What every harness process does first: die with its parent, and with the ``mhp fuzz``
    process that started the campaign (``MHP_FUZZ_CAMPAIGN``, a pid): libFuzzer's fork-mode
    workers run under a ``sh -c`` that outlives their parent, so a thread waits on the
    campaign's pidfd and kills this process when it ends."""
    die_with_parent()
    pid = os.environ.get("MHP_FUZZ_CAMPAIGN")
    if not pid:
        return
    try:
        fd = os.pidfd_open(int(pid))
    except ProcessLookupError:  # already gone
        os.kill(os.getpid(), signal.SIGKILL)
        return
    except (OSError, AttributeError, ValueError):  # no pidfds here (Linux < 5.3): the parent's death signal only
        return

    def wait() -> None:
        select.select([fd], [], [])  # readable when the campaign's process ends
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=wait, name="die-with-campaign", daemon=True).start()


def fix_crcs(data: bytes) -> bytes:
    """Recompute the header CRC and every chunk CRC the framing can find (so mutations reach
    record decoding)."""
    buf = bytearray(data)
    if len(buf) < FIXED_HEADER_SIZE:
        return data
    length = struct.unpack_from("<I", buf, 16)[0]
    if FIXED_HEADER_SIZE <= length <= len(buf):
        struct.pack_into("<I", buf, 20, zlib.crc32(bytes(buf[FIXED_HEADER_SIZE:length])))
        pos = length
        while pos + CHUNK_HEADER.size <= len(buf) and buf[pos : pos + 4] == CHUNK_MAGIC:
            n = struct.unpack_from("<I", buf, pos + 16)[0]
            if n > MAX_CHUNK or pos + CHUNK_HEADER.size + n > len(buf):
                break
            payload = bytes(buf[pos + CHUNK_HEADER.size : pos + CHUNK_HEADER.size + n])
            struct.pack_into("<I", buf, pos + 20, chunk_crc(bytes(buf[pos : pos + 20]), payload))
            pos += CHUNK_HEADER.size + n
    return bytes(buf)


def one_line_error(e: BaseException, path: str | None) -> None:
    """The oracle for a failure: an InputError on one line naming ``path`` (None: an in-memory
    input, no file) and a position; anything else is raised again."""
    if not isinstance(e, InputError):
        raise e
    text = str(e)
    if "\n" in text or "\r" in text:
        raise AssertionError(f"error on more than one line: {text!r}")
    if e.path != path or not e.position():
        raise AssertionError(f"error without {'its file' if e.path != path else 'a position'}: {text!r}")


_WORK = tempfile.mkdtemp(prefix="mhp-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
atexit.register(shutil.rmtree, _WORK, True)


@contextmanager
def input_file(data: bytes, name: str) -> Iterator[str]:
    """``data`` as a file named ``name`` (errors must name it), removed afterwards with its outputs."""
    path = os.path.join(_WORK, name)
    with open(path, "wb") as f:
        f.write(data)
    try:
        yield path
    finally:
        for p in os.listdir(_WORK):
            os.unlink(os.path.join(_WORK, p))


def _crc_fixed(data: bytes) -> bytes:
    """Half of the inputs (odd first byte) get their CRCs recomputed first, so mutations reach
    record decoding and the model."""
    return fix_crcs(data) if data[:1] and data[0] & 1 else data


# --- the targets ------------------------------------------------------------------------------------------


def check_format(data: bytes) -> None:
    """The strict reader (header, chunks, records, index): records or a positioned error; the fast
    and the construct decoder agree; whatever decodes survives binary -> text -> binary."""

    data = _crc_fixed(data)

    def read(decoder: str) -> tuple[str, object, object]:
        try:
            r = TraceReader(io.BytesIO(data), decoder=decoder)
            return "ok", r.header, r.read_all()
        except InputError as e:
            one_line_error(e, None)
            return "error", str(e), None

    fast, slow = read("fast"), read("construct")
    if fast != slow:
        raise AssertionError(f"fast and construct decoders disagree: {fast[:2]!r} vs {slow[:2]!r}")
    if fast[0] == "ok":
        header, records = fast[1], fast[2]
        text = "".join(dump(header, records))  # type: ignore[arg-type]
        header2, records2 = parse_text(text)
        if (header2, records2) != (header, records):
            raise AssertionError("text round trip changed the trace")
        for rec in records2:
            encode_record(rec)


def check_repair(data: bytes) -> None:
    """Tolerant reading: verify and repair read any file whose header is intact; repair's output
    verifies clean and keeps every record verify read (Loss records mark the rest)."""

    with input_file(_crc_fixed(data), "in.mhpt") as path:
        try:
            report = verify(path)
        except InputError as e:
            one_line_error(e, path)
            return
        out = path + ".fixed.mhpt"
        repair(path, out)
        again = verify(out)
        if not again.clean:
            raise AssertionError(f"repair's output does not verify: {again.lines()}")
        with TraceReader(path, tolerant=True) as r:
            kept = [rec.event for rec in r]
        with TraceReader(out) as r:
            written = [rec.event for rec in r if not (type(rec.event) is Loss and rec.event.reason.startswith("mhp repair:"))]
        if written != kept or report.stats.records != len(kept):
            raise AssertionError(f"repair kept {len(written)} of the {len(kept)} records verify read")


def check_text(data: bytes) -> None:
    """``mhp compile`` on any bytes: a trace every reader accepts, or an error at its line; what it
    writes dumps and compiles back to the same bytes."""

    with input_file(data, "in.txt") as path:
        out = path + ".mhpt"
        try:
            compile_text(path, out)
        except InputError as e:
            one_line_error(e, path)
            return
        with TraceReader(out) as r:
            r.read_all()
        text = io.StringIO()
        dump_trace(out, text)
        with open(path + ".dump.txt", "w") as f:
            f.write(text.getvalue())
        compile_text(path + ".dump.txt", path + ".again.mhpt")
        with open(out, "rb") as a, open(path + ".again.mhpt", "rb") as b:
            if a.read() != b.read():
                raise AssertionError("text -> binary -> text -> binary changed the bytes")


def check_scenario(data: bytes) -> None:
    """A scenario file through ``mhp simulate -o``: layouts after every step and a trace that reads
    back, or an error naming the file and line."""

    with input_file(data, "in.toml") as path:
        try:
            scenario = load_scenario(path)
            sim = Simulation(scenario, get_profile(scenario.profile or "6.1"))
            for _ in simulate(scenario, sim=sim):
                pass
        except InputError as e:
            one_line_error(e, path)
            return
        n = write_trace(sim, path + ".mhpt")
        with TraceReader(path + ".mhpt") as r:
            if len(r.read_all()) != n:
                raise AssertionError("the simulation's trace does not read back whole")


COMMANDS_SECTIONS_MAX = 1 << 15  # memory an input may boot or add, in sections (4 TiB of 128 MiB ones)


def sections_described(data: bytes) -> int:
    """The sections a trace boots and adds, up to where the reader stops: what the model's work on it grows with."""
    total = 0
    try:
        with TraceReader(io.BytesIO(data)) as r:
            unit = r.header.section_size or 1
            per_block = max(r.header.block_size // unit, 1)
            for ev in r.events():
                if isinstance(ev, AddMemory):
                    total += ev.size // unit
                elif isinstance(ev, BootBlocks):
                    total += ev.count * per_block
    except InputError:
        pass
    return total


def check_commands(data: bytes) -> None:
    """What the model-driven commands do with whatever the reader accepts: replay, layout, the
    plot's data and the Perfetto export end or fail with an error naming the file and position.
    Inputs describing more than COMMANDS_SECTIONS_MAX sections are skipped: each command's work
    grows with the blocks (32 TiB added in one record take seconds per command), and the model
    target and tests/test_hostile.py cover the largest machines."""
    data = _crc_fixed(data)
    if sections_described(data) > COMMANDS_SECTIONS_MAX:
        return
    with input_file(data, "in.mhpt") as path:
        res = replay_file(path)
        if res.error is not None:
            _positioned(res.error, path)
        steps: list[Callable[[], Any]] = [
            lambda: (lambda k: (format_runs(block_runs(k.m), True), format_zones(k.m), zone_table(k.m)))(model_at(path)[1]),
            lambda: grid(sample(path, budget=1 << 18)),
            lambda: write_chrome(path, io.StringIO(), None),
        ]
        for step in steps:
            try:
                step()
            except InputError as e:
                one_line_error(e, path)


def _positioned(error: str, path: str) -> None:
    """A replay's error text: one line, the file, a position."""
    if "\n" in error or not error.startswith(f"{path}: ") or not any(w in error for w in ("byte ", "record ", "line ", "field ")):
        raise AssertionError(f"replay error without file and position: {error!r}")


def _profile(name: str) -> Any:

    return get_profile(name)


def dictionary(target: str) -> str:
    """libFuzzer's dictionary for a target ('' for none): the format's magic numbers and framing
    bytes for the trace targets, the text form's words for ``text``, scenario keys for ``scenario``."""
    if target == "text":
        words = [f"{w}".encode() for w in (*NAMES, *(f.name + "=" for cls in NAMES.values() for f in fields_of(cls)), *TEXT_WORDS)]
    elif target == "scenario":
        words = [w.encode() for w in SCENARIO_WORDS]
    elif target in ("model", "steps"):
        return ""  # structure-aware: events (scenario steps) are mutated as events (steps)
    else:
        words = [MAGIC, CHUNK_MAGIC, INDEX_MAGIC, TRAILER_MAGIC, b"\x04\x03\x02\x01", b"\x01\x00\x00\x00"]
    hexed = ["".join(f"\\x{b:02x}" for b in w) for w in dict.fromkeys(words)]
    return "".join(f'"{h}"\n' for h in hexed)


TEXT_WORDS = (
    "%mhpt 1.0", "%writer", "%kernel release=", "cmdline=", "%arch", "%geometry page_size=", "section_size=", "block_size=", "%params",
    "%source", "detail=", "%clock", "wall_ns=", "%section", "data=", "%chunk", "%index absent", "%index present", "raw code=", "@flags=",
    "@extra=", "0.000000000", "0x8000000", "Movable", "Normal", "DMA32", "none", "online_movable", "online_kernel", "true", "false",
    "18446744073709551615", "4294967295", "K", "M", "G", "T", '"', "\\u2028", "#",
)  # fmt: skip
SCENARIO_WORDS = (
    "[machine]", "[kernel]", "[[device]]", "[[step]]", "[[machine.zone]]", "[[machine.blocks]]", "preset = ", '"qemu-q35-4G"',
    '"qemu-q35-4G-2node"', '"qemu-q35-4G-memless1"', "block_size = ", "device_memory_base = ", "possible_nodes = [0, 1]", "cpu_nodes = [0]",
    "zone = ", "start_pfn = ", "spanned = ", "present = ", "present_early = ", "first = ", "count = ", "state = ", "node = ", "profile = ",
    '"6.12"', "cmdline = ", "memhp_default_state=online", "memory_hotplug.online_policy=auto-movable", "memory_hotplug.auto_movable_ratio=",
    "movable_node", "memory_hotplug.memmap_on_memory=1", "id = ", "type = ", '"virtio-mem"', "max_size = ", "unplug_online = false",
    "dimm = ", "unplug = ", "vmem = ", "size = ", "online = ", "offline = ", '"48-55"', "attr = ", '"online"', "fails = ", '"EBUSY"',
    "param = ", '"auto_movable_ratio"', '"online_policy"', '"auto_movable_numa_aware"', "value = ", "auto_online = ", '"online_movable"',
    "mark = ", "expect_findings = []", "name = ", "description = ", '"128M"', '"4G"', '"64T"', "4294967295", "-1",
)  # fmt: skip

TARGETS: dict[str, Callable[[bytes], None]] = {
    "format": check_format,
    "repair": check_repair,
    "text": check_text,
    "scenario": check_scenario,
    "commands": check_commands,
}
