"""The guest's initramfs: static busybox, the virtio modules the kernel lacks, an /init and the command agent.

The agent (``/agent.sh``, busybox ash) reads one command per line from the virtio-serial port named
``mhp.agent`` and answers with the command's output followed by ``@@END <id> <exit status>``. Host and
guest speak only this line protocol; ``sample`` prints the guest's memory blocks, zones and parameters;
``record_start``/``record_mark``/``record_stop`` run the guest's own ``mhp record`` (Debian's Python and this
project, traces/lab/userland.py), whose trace streams to the port ``mhp.trace``.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import re
import shutil
import struct
import time
from dataclasses import dataclass
from pathlib import Path

from traces.lab.setup import KernelPaths, LabSetupError, cache_dir
from traces.lab.userland import userland_entries

AGENT_PORT = "mhp.agent"
TRACE_PORT = "mhp.trace"  # the guest recorder's trace streams out here, into a file on the host
# Config symbols the lab needs and the module each one builds; =y means built in, =m a module to load.
NEEDED = (("CONFIG_VIRTIO_PCI", "virtio_pci"), ("CONFIG_VIRTIO_CONSOLE", "virtio_console"), ("CONFIG_VIRTIO_MEM", "virtio_mem"))
BUILTIN_ONLY = ("CONFIG_MEMORY_HOTPLUG", "CONFIG_MEMORY_HOTREMOVE", "CONFIG_ACPI_HOTPLUG_MEMORY", "CONFIG_DEVTMPFS", "CONFIG_BLK_DEV_INITRD")

INIT = r"""#!/bin/busybox sh
# mhp-replay lab guest: mount, load modules (parameters MOD.KEY=VAL from the kernel command line), run the agent.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /sbin /usr/bin /usr/sbin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
for m in $(cat /modules.order); do
  args=""
  for w in $(cat /proc/cmdline); do
    case "$w" in "$m".*=*) args="$args ${w#"$m".}";; esac
  done
  insmod "/lib/modules/$m.ko" $args || echo "mhp-init: insmod $m failed"
done
echo "mhp-init: modules loaded, starting agent"
exec /bin/sh /agent.sh
"""

AGENT = r"""#!/bin/sh
# mhp-replay lab agent: "ID COMMAND" lines in, the output then "@@END ID STATUS" out, on one virtio-serial port.
M=/sys/devices/system/memory
sample() {
  for d in $M/memory[0-9]*; do
    s=""; z=""; n=-1
    read -r s 2>/dev/null <"$d/state"
    read -r z 2>/dev/null <"$d/valid_zones"
    for l in "$d"/node[0-9]*; do [ -e "$l" ] && n=${l##*/node}; done
    echo "B ${d##*/memory} $n ${s:--} $z"
  done
  grep -E '^Node|^ +(present|managed|spanned) |^ +start_pfn:' /proc/zoneinfo
  for p in online_policy auto_movable_ratio auto_movable_numa_aware; do
    v=""; read -r v 2>/dev/null </sys/module/memory_hotplug/parameters/$p; echo "P $p $v"
  done
  v=""; read -r v <$M/auto_online_blocks; echo "P auto_online_blocks $v"
  v=""; read -r v <$M/block_size_bytes; echo "P block_size_bytes $v"
}
# port NAME: the /dev/vportNpM of the virtio-serial port NAME.
port() {
  for p in /sys/class/virtio-ports/*; do
    n=""; read -r n 2>/dev/null <"$p/name"
    [ "$n" = "$1" ] && [ -e "/dev/${p##*/}" ] && echo "/dev/${p##*/}" && return 0
  done
  return 1
}
# The guest's own `mhp record`, streaming its trace to the port TRACEPORT; marks go through its control FIFO.
CTL=/run/mhp.ctl
alive() {  # running, not a zombie (the agent, process 1, reaps nothing)
  p=$(cat /run/mhp-record.pid); s=""
  while read -r k v; do [ "$k" = "State:" ] && s=$v; done 2>/dev/null </proc/$p/status
  [ -n "$s" ] && [ "${s%% *}" != Z ]
}
record_start() {
  out=$(port TRACEPORT) || { echo "no virtio-serial port TRACEPORT"; return 1; }
  rm -f $CTL $CTL.done
  mhp record -o - --control $CTL "$@" >"$out" 2>/run/mhp-record.err 3>&- &
  echo $! >/run/mhp-record.pid
  while [ ! -e $CTL.done ]; do alive || { cat /run/mhp-record.err; return 1; }; sleep 0.1; done
}
record_mark() {
  read -r n <$CTL.done; n=$((n + 1))
  echo "$*" >$CTL
  while :; do read -r d <$CTL.done; [ "$d" = "$n" ] && return 0; alive || { cat /run/mhp-record.err; return 1; }; sleep 0.05; done
}
record_stop() {
  kill -TERM "$(cat /run/mhp-record.pid)"
  while alive; do sleep 0.1; done
  cat /run/mhp-record.err
}
port=""
i=0
while [ -z "$port" ]; do
  for p in /sys/class/virtio-ports/*; do
    n=""; read -r n 2>/dev/null <"$p/name"
    [ "$n" = "PORTNAME" ] && port=/dev/${p##*/}
  done
  [ -n "$port" ] && [ -e "$port" ] && break
  port=""; i=$((i + 1))
  [ $i = 300 ] && echo "mhp-agent: no virtio-serial port PORTNAME" && i=0
  sleep 0.1
done
echo "mhp-agent: listening on $port"
exec 3<>"$port"
while :; do
  if ! IFS= read -r line <&3; then sleep 0.1; continue; fi
  id=${line%% *}
  cmd=${line#* }
  out=$(eval "$cmd" 2>&1)
  rc=$?
  printf '%s\n@@END %s %s\n' "$out" "$id" "$rc" >&3
done
""".replace("PORTNAME", AGENT_PORT).replace("TRACEPORT", TRACE_PORT)


@dataclass(frozen=True, slots=True)
class Module:
    """A kernel module to load in the guest: its name, file in the package, and the modules it needs."""

    name: str
    path: Path
    depends: tuple[str, ...]


def read_config(path: Path) -> dict[str, str]:
    """A kernel .config as {CONFIG_X: 'y'|'m'|value}; unset symbols are absent."""
    out = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^(CONFIG_\w+)=(.*)$", line)
        if m:
            out[m.group(1)] = m.group(2).strip('"')
    return out


def module_bytes(path: Path) -> bytes:
    """A module file's ELF bytes (.ko as is, .ko.xz decompressed)."""
    if path.name.endswith(".ko"):
        return path.read_bytes()
    if path.name.endswith(".ko.xz"):
        return lzma.decompress(path.read_bytes())
    if path.name.endswith(".ko.gz"):
        return gzip.decompress(path.read_bytes())
    raise LabSetupError(f"{path}: unsupported module compression (only .ko, .ko.xz, .ko.gz)")


def modinfo_depends(elf: bytes) -> tuple[str, ...]:
    """The ``depends=`` list of a module's .modinfo strings."""
    m = re.search(rb"(?:^|\x00)depends=([A-Za-z0-9_,-]*)\x00", elf)
    if not m or not m.group(1):
        return ()
    return tuple(d.replace("-", "_") for d in m.group(1).decode().split(","))


def _index_modules(moddir: Path) -> dict[str, Path]:
    """Module name (with '_') -> file, for every .ko / .ko.xz / .ko.gz under lib/modules/<release>/kernel."""
    out = {}
    for root, _dirs, files in os.walk(moddir / "kernel"):
        for f in files:
            m = re.match(r"^(.+)\.ko(\.xz|\.gz|\.zst)?$", f)
            if m:
                out[m.group(1).replace("-", "_")] = Path(root) / f
    return out


def _builtin(moddir: Path) -> set[str]:
    try:
        lines = (moddir / "modules.builtin").read_text().split()
    except OSError:
        return set()
    return {Path(x).name.split(".ko")[0].replace("-", "_") for x in lines}


def module_plan(kernel: KernelPaths) -> list[Module]:
    """The modules to insmod, dependencies first, chosen from the kernel's config (=m) and .modinfo depends."""
    if not kernel.config.is_file():
        raise LabSetupError(f"{kernel.config}: no kernel config in the unpacked package")
    config = read_config(kernel.config)
    for sym in BUILTIN_ONLY:
        if config.get(sym) != "y":
            raise LabSetupError(f"{kernel.config}: {sym} is not built in; the lab cannot use this kernel")
    wanted = []
    for sym, name in NEEDED:
        v = config.get(sym)
        if v == "m":
            wanted.append(name)
        elif v != "y":
            raise LabSetupError(f"{kernel.config}: {sym} is not set; the lab needs it")
    files = _index_modules(kernel.modules)
    builtin = _builtin(kernel.modules)
    order: list[Module] = []
    seen: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in seen or name in builtin:
            return
        if name in chain:
            raise LabSetupError(f"module dependency cycle: {' -> '.join((*chain, name))}")
        path = files.get(name)
        if path is None:
            raise LabSetupError(f"module {name} not found under {kernel.modules}")
        deps = modinfo_depends(module_bytes(path))
        for d in deps:
            visit(d, (*chain, name))
        seen.add(name)
        order.append(Module(name, path, deps))

    for name in wanted:
        visit(name, ())
    return order


# --- cpio newc -------------------------------------------------------------------------------------


def _newc_entry(name: str, mode: int, data: bytes, ino: int) -> bytes:
    namez = name.encode() + b"\x00"
    hdr = "070701" + "".join(f"{v:08x}" for v in (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(namez), 0))
    out = hdr.encode() + namez
    out += b"\x00" * (-len(out) % 4)
    out += data + b"\x00" * (-len(data) % 4)
    return out


def write_newc(entries: list[tuple[str, int, bytes]]) -> bytes:
    """A cpio archive (newc) of (name, mode, data) entries; mode carries the file type (S_IFREG/S_IFDIR/S_IFLNK)."""
    out = [_newc_entry(n, mode, data, i + 1) for i, (n, mode, data) in enumerate(entries)]
    out.append(_newc_entry("TRAILER!!!", 0, b"", 0))
    return b"".join(out)


def read_newc(blob: bytes) -> list[tuple[str, int, bytes]]:
    """The (name, mode, data) entries of a newc cpio archive (gzip-compressed or not), trailer excluded."""
    if blob[:2] == b"\x1f\x8b":
        blob = gzip.decompress(blob)
    out: list[tuple[str, int, bytes]] = []
    pos = 0
    while True:
        if blob[pos : pos + 6] != b"070701":
            raise ValueError(f"not a newc cpio header at byte {pos}")
        f = [int(blob[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, size, namesize = f[1], f[6], f[11]
        name = blob[pos + 110 : pos + 110 + namesize - 1].decode()
        pos += 110 + namesize
        pos += -pos % 4
        data = blob[pos : pos + size]
        pos += size + (-size % 4)
        if name == "TRAILER!!!":
            return out
        out.append((name, mode, data))


DIR, REG, EXE = 0o040755, 0o100644, 0o100755


def initramfs_entries(kernel: KernelPaths, busybox: Path, userland: list[tuple[str, int, bytes]] | None = None) -> list[tuple[str, int, bytes]]:
    """Everything the guest's initramfs holds: dirs, busybox, /init, /agent.sh, modules and their load order, and the
    user space (``userland``: traces/lab/userland.py)."""
    plan = module_plan(kernel)
    entries: list[tuple[str, int, bytes]] = [(d, DIR, b"") for d in ("bin", "dev", "proc", "sys", "tmp", "lib", "lib/modules")]
    entries.append(("bin/busybox", EXE, busybox.read_bytes()))
    entries.append(("bin/sh", 0o120777, b"busybox"))
    entries.append(("init", EXE, INIT.encode()))
    entries.append(("agent.sh", EXE, AGENT.encode()))
    entries += [(f"lib/modules/{m.name}.ko", REG, module_bytes(m.path)) for m in plan]
    entries.append(("modules.order", REG, "".join(f"{m.name}\n" for m in plan).encode()))
    seen = {name for name, _mode, _data in entries}
    return entries + [e for e in userland or () if e[0] not in seen]


def is_static_elf(path: Path) -> bool:
    """True for an ELF64 executable without a PT_INTERP program header (statically linked)."""
    with path.open("rb") as f:
        head = f.read(64)
        if head[:5] != b"\x7fELF\x02":
            return False
        phoff, phentsize, phnum = struct.unpack_from("<Q", head, 32)[0], *struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    return all(struct.unpack_from("<I", table, i * phentsize)[0] != 3 for i in range(phnum))


def find_busybox() -> Path:
    """A statically linked busybox (Debian's busybox-static installs /bin/busybox)."""
    for cand in (Path("/bin/busybox"), Path(shutil.which("busybox") or "/nonexistent")):
        if cand.is_file():
            if not is_static_elf(cand):
                raise LabSetupError(f"{cand} is not a statically linked x86-64 ELF: install busybox-static")
            return cand
    raise LabSetupError("busybox not found: run 'python -m traces.lab --setup' as root (installs busybox-static)")


def build_initramfs(kernel: KernelPaths, busybox: Path | None = None) -> Path:
    """The gzip-compressed initramfs for a kernel, built once and cached by content."""
    entries = initramfs_entries(kernel, busybox or find_busybox(), userland_entries())
    blob = write_newc(entries)
    digest = hashlib.sha256(blob).hexdigest()[:16]
    out = cache_dir() / "initramfs" / f"{kernel.release}-{digest}.cpio.gz"
    if out.is_file():
        os.utime(out)  # in use: kept by the pruning below
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
    tmp.write_bytes(gzip.compress(blob, compresslevel=1, mtime=0))
    tmp.replace(out)
    week = time.time() - 7 * 86400
    for old in out.parent.glob("*.cpio.gz"):  # builds of other code, unused for a week (several checkouts share the cache)
        if old != out and old.stat().st_mtime < week:
            old.unlink(missing_ok=True)
    return out
