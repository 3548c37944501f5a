"""The event vocabulary: every event type, its fields, their wire types and the resources they name.

This table is the single source of truth. Each event is a frozen dataclass whose fields are
annotated with a wire type (``U8`` ... ``STR``) and optionally a resource kind; the codec, the text
form and the fuzzer's mutator are all derived from these annotations.
"""

from __future__ import annotations

import enum
import typing
from dataclasses import dataclass
from typing import Annotated, NamedTuple, get_type_hints

# --- wire types --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Wire:
    """A field's wire type: struct format code and value range."""

    name: str
    fmt: str  # struct format character ('s' = length-prefixed UTF-8 string)
    lo: int = 0
    hi: int = 0


U8 = Wire("u8", "B", 0, 2**8 - 1)
U16 = Wire("u16", "H", 0, 2**16 - 1)
U32 = Wire("u32", "I", 0, 2**32 - 1)
U64 = Wire("u64", "Q", 0, 2**64 - 1)
S16 = Wire("s16", "h", -(2**15), 2**15 - 1)
S32 = Wire("s32", "i", -(2**31), 2**31 - 1)
S64 = Wire("s64", "q", -(2**63), 2**63 - 1)
BOOL = Wire("bool", "?", 0, 1)
STR = Wire("str", "s", 0, 255)  # at most 255 UTF-8 bytes
ZONES = Wire("zones", "I", 0, 2**32 - 1)  # up to 4 zone ids in order, one byte each, 0xFF = none


class Res(enum.Enum):
    """Resource kinds a field refers to (used for resource closure and mutation)."""

    BLOCK = "block"
    GROUP = "group"
    NODE = "node"
    ADDR = "addr"  # physical address in bytes
    SIZE = "size"  # size in bytes
    PAGES = "pages"
    ERRNO = "errno"
    RATIO = "ratio"


# --- enumerations shared with the model ---------------------------------------------------------


class ZoneType(enum.IntEnum):
    """Zone indices on x86-64 (include/linux/mmzone.h); NONE marks "no single zone"."""

    DMA = 0
    DMA32 = 1
    NORMAL = 2
    MOVABLE = 3
    NONE = 255

    @property
    def label(self) -> str:
        return ZONE_LABELS[self]


ZONE_LABELS = {
    ZoneType.DMA: "DMA",
    ZoneType.DMA32: "DMA32",
    ZoneType.NORMAL: "Normal",
    ZoneType.MOVABLE: "Movable",
    ZoneType.NONE: "none",
}


class OnlineType(enum.IntEnum):
    """MMOP_* values (include/linux/memory_hotplug.h)."""

    OFFLINE = 0
    ONLINE = 1
    ONLINE_KERNEL = 2
    ONLINE_MOVABLE = 3

    @property
    def label(self) -> str:
        return ONLINE_TYPE_NAMES[self]


ONLINE_TYPE_NAMES = {
    OnlineType.OFFLINE: "offline",
    OnlineType.ONLINE: "online",
    OnlineType.ONLINE_KERNEL: "online_kernel",
    OnlineType.ONLINE_MOVABLE: "online_movable",
}


class BlockState(enum.IntEnum):
    """User-visible memory block states; ABSENT means no such block device."""

    ABSENT = 0
    ONLINE = 1
    GOING_OFFLINE = 2
    OFFLINE = 4


class Attr(enum.IntEnum):
    """Which sysfs attribute a user-space request wrote."""

    STATE = 0  # memoryN/state: "online", "online_kernel", "online_movable", "offline"
    ONLINE = 1  # memoryN/online: "1" / "0"


class Source(enum.IntEnum):
    """Who issued a request."""

    USER = 0
    KERNEL = 1  # in-kernel auto-online
    DRIVER = 2  # a driver (virtio-mem, ACPI)


class Op(enum.IntEnum):
    """The block operation an injected failure applies to."""

    ONLINE = 0
    OFFLINE = 1
    REGISTER = 2  # the block device's registration in add_memory (driver core, -ENOMEM ...)


class Param(enum.IntEnum):
    """Run-time writable hotplug parameters."""

    ONLINE_POLICY = 0
    AUTO_MOVABLE_RATIO = 1
    AUTO_MOVABLE_NUMA_AWARE = 2
    AUTO_ONLINE_BLOCKS = 3


class Policy(enum.IntEnum):
    """memory_hotplug.online_policy values."""

    CONTIG_ZONES = 0
    AUTO_MOVABLE = 1


class AddFlags(enum.IntFlag):
    """Flags of an add_memory request (mhp_t plus the driver-managed resource name)."""

    NONE = 0
    NID_IS_MGID = 1
    MEMMAP_ON_MEMORY = 2
    DRIVER_MANAGED = 4
    MERGE_RESOURCE = 8


# --- what a real machine can have (x86-64, 4-level paging) -------------------------------------------

PHYS_ADDR_BITS = 46  # MAX_PHYSMEM_BITS
PHYS_ADDR_END = 1 << PHYS_ADDR_BITS
MAX_PFN = PHYS_ADDR_END >> 12
MIN_BLOCK_SIZE = 128 << 20  # a memory block holds at least one 128 MiB section
MAX_BLOCKS = PHYS_ADDR_END // MIN_BLOCK_SIZE  # block ids 0 .. 2**19 - 1
MAX_NODES = 64  # node ids 0..63: the boot_machine node sets are u64 bit masks


# --- the event table -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Since:
    """A field appended to its record body in format minor version ``minor``: bodies written before
    end ahead of it, and the field reads as None ("not recorded"). Appended fields come last, in
    the order of their minor versions, and default to None."""

    minor: int


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field of an event type as derived from its annotations."""

    name: str
    wire: Wire
    py: type
    res: Res | None
    since: int = 0  # the format minor version that appended the field (0: an original field)


EVENT_TYPES: dict[int, type[Event]] = {}
KIND_OF: dict[type, str] = {}  # event type -> its role: boot, request, inject, observe, mark (codec.Unknown: unknown)
CODE_OF: dict[type, int] = {}  # event type -> its record type code
REPEATING: set[type] = set()  # event types whose records often repeat an earlier one byte for byte
_SPECS: dict[type, tuple[FieldSpec, ...]] = {}
_T = typing.TypeVar("_T", bound=type)


def event(code: int, kind: str, *, repeats: bool = True) -> typing.Callable[[_T], _T]:
    """Register a NamedTuple class as event type ``code`` with role ``kind``.

    Events are NamedTuples so that decoders build them from unpacked tuples cheaply; equality
    also compares the type, so two event types with equal fields never compare equal.
    ``repeats``: records of this type often repeat an earlier one byte for byte (requests and
    block observations do; counter samples, digests and free text do not), so the fast decoder
    interns them.
    """

    def register(cls: _T) -> _T:
        if code in EVENT_TYPES:
            raise ValueError(f"event code {code:#x} used twice")
        set_kind(cls, kind)
        CODE_OF[cls] = code
        if repeats:
            REPEATING.add(cls)
        for name, value in (("CODE", code), ("REPEATS", repeats), ("__eq__", _typed_eq), ("__ne__", _typed_ne), ("__hash__", _typed_hash)):
            setattr(cls, name, value)
        EVENT_TYPES[code] = cls
        return cls

    return register


def set_kind(cls: type, kind: str) -> None:
    """Give ``cls`` its role (``KIND_OF``, and its ``KIND`` attribute)."""
    KIND_OF[cls] = kind
    setattr(cls, "KIND", kind)  # noqa: B010 (the class is any NamedTuple)


def kind_of(ev: object) -> str:
    """An event's role: boot, request, inject, observe, mark or unknown."""
    return KIND_OF[type(ev)]


def _typed_eq(self: tuple[object, ...], other: object) -> bool:
    return type(self) is type(other) and isinstance(other, tuple) and tuple.__eq__(self, other)


def _typed_ne(self: tuple[object, ...], other: object) -> bool:
    return not _typed_eq(self, other)


def _typed_hash(self: tuple[object, ...]) -> int:
    return hash((type(self).__name__, tuple(self)))


def fields_of(cls: type) -> tuple[FieldSpec, ...]:
    """The field specs of an event type, in declaration order."""
    spec = _SPECS.get(cls)
    if spec is None:
        hints = get_type_hints(cls, include_extras=True)
        out: list[FieldSpec] = []
        fields: tuple[str, ...] = getattr(cls, "_fields")  # noqa: B009 (any NamedTuple class)
        defaults: dict[str, object] = getattr(cls, "_field_defaults")  # noqa: B009
        for name in fields:
            py, *meta = typing.get_args(hints[name]) or (hints[name],)
            wire = next((m for m in meta if isinstance(m, Wire)), None)
            if wire is None:  # not an event field (codec.Unknown has none)
                continue
            res = next((m for m in meta if isinstance(m, Res)), None)
            since = next((m.minor for m in meta if isinstance(m, Since)), 0)
            if since and defaults.get(name, 0) is not None:
                raise TypeError(f"{cls.__name__}.{name}: an appended field defaults to None")
            if out and since < out[-1].since:
                raise TypeError(f"{cls.__name__}.{name}: original fields come before appended ones, appended ones in minor order")
            out.append(FieldSpec(name, wire, py, res, since))
        spec = _SPECS[cls] = tuple(out)
    return spec


# Boot snapshot -------------------------------------------------------------------------------------


@event(0x01, "boot", repeats=False)
class BootMachine(NamedTuple):
    """Machine geometry: memory block size, possible NUMA nodes and nodes with CPUs (bit masks)."""

    block_size: Annotated[int, U64, Res.SIZE]
    possible_nodes: Annotated[int, U64]
    cpu_nodes: Annotated[int, U64]


@event(0x02, "boot", repeats=False)
class BootParams(NamedTuple):
    """Hotplug parameters in force at boot (already parsed)."""

    online_policy: Annotated[Policy, U8]
    auto_movable_ratio: Annotated[int, U32, Res.RATIO]
    auto_movable_numa_aware: Annotated[bool, BOOL]
    auto_online_blocks: Annotated[OnlineType, U8]
    memmap_on_memory: Annotated[int, U8]  # 0 off, 1 on, 2 force (6.6+)
    movable_node: Annotated[bool, BOOL]


@event(0x03, "boot", repeats=False)
class BootZone(NamedTuple):
    """A zone of an online node as laid out at boot."""

    node: Annotated[int, U16, Res.NODE]
    zone: Annotated[ZoneType, U8]
    start_pfn: Annotated[int, U64]
    spanned: Annotated[int, U64, Res.PAGES]
    present: Annotated[int, U64, Res.PAGES]
    present_early: Annotated[int, U64, Res.PAGES]
    cma: Annotated[int, U64, Res.PAGES]
    managed: Annotated[int | None, U64, Res.PAGES, Since(1)] = None  # /proc/zoneinfo managed; None: not recorded


@event(0x04, "boot", repeats=False)
class BootGroup(NamedTuple):
    """A memory group that exists when the snapshot is taken."""

    mgid: Annotated[int, S32, Res.GROUP]
    node: Annotated[int, U16, Res.NODE]
    dynamic: Annotated[bool, BOOL]
    pages: Annotated[int, U64, Res.PAGES]  # max_pages (static) or unit_pages (dynamic)


# A field named ``count`` shadows tuple.count, which mypy refuses in class syntax: such event types use
# NamedTuple's functional form.
BootBlocks = NamedTuple(  # noqa: UP014 (class syntax: mypy refuses the field count)
    "BootBlocks",
    [
        ("first", Annotated[int, U32, Res.BLOCK]),
        ("count", Annotated[int, U32]),
        ("node", Annotated[int, U16, Res.NODE]),
        ("state", Annotated[BlockState, U8]),
        ("zone", Annotated[ZoneType, U8]),  # online: its zone, NONE if several; offline: NONE
        ("early", Annotated[bool, BOOL]),
        ("mgid", Annotated[int, S32, Res.GROUP]),  # -1: no group
        ("vmemmap_pages", Annotated[int, U32, Res.PAGES]),
        ("present_pages", Annotated[int, U32, Res.PAGES]),  # present pages per block (holes)
    ],
)
BootBlocks.__doc__ = """A run of ``count`` memory blocks from ``first`` with identical attributes."""
event(0x05, "boot", repeats=False)(BootBlocks)


class UnknownFact(enum.IntEnum):
    """Facts of a snapshot that a running host did not show (``boot_unknown``)."""

    PRESENT_PAGES = 0  # /proc/iomem hid its addresses (not root): every block taken as fully present
    GROUP_UNIT = 1  # a virtio-mem device's unit (its start-up lines left the kernel log): one memory block taken


@event(0x06, "boot", repeats=False)
class BootUnknown(NamedTuple):
    """Something the snapshot could not know; the replayer skips the comparisons that depend on it."""

    fact: Annotated[UnknownFact, U8]
    mgid: Annotated[int, S32, Res.GROUP]  # GROUP_UNIT: the group; else -1


# Requests (model inputs) ---------------------------------------------------------------------------


@event(0x10, "request")
class ParamWrite(NamedTuple):
    """A write to a run-time hotplug parameter (raw string, parsed like the kernel)."""

    param: Annotated[Param, U8]
    value: Annotated[str, STR]


@event(0x11, "request")
class GroupRegister(NamedTuple):
    """memory_group_register_static/dynamic; result: the new mgid or -errno."""

    dynamic: Annotated[bool, BOOL]
    node: Annotated[int, S32, Res.NODE]
    pages: Annotated[int, U64, Res.PAGES]


@event(0x12, "request")
class GroupUnregister(NamedTuple):
    """memory_group_unregister."""

    mgid: Annotated[int, S32, Res.GROUP]


@event(0x13, "request")
class AddMemory(NamedTuple):
    """add_memory / add_memory_driver_managed; ``nid`` is a group id with NID_IS_MGID."""

    start: Annotated[int, U64, Res.ADDR]
    size: Annotated[int, U64, Res.SIZE]
    nid: Annotated[int, S32, Res.NODE]
    flags: Annotated[AddFlags, U8]


@event(0x14, "request")
class RemoveMemory(NamedTuple):
    """remove_memory of a physical range."""

    start: Annotated[int, U64, Res.ADDR]
    size: Annotated[int, U64, Res.SIZE]


@event(0x15, "request")
class OfflineAndRemoveMemory(NamedTuple):
    """offline_and_remove_memory of a physical range (virtio-mem)."""

    start: Annotated[int, U64, Res.ADDR]
    size: Annotated[int, U64, Res.SIZE]


@event(0x16, "request")
class OnlineBlock(NamedTuple):
    """Online request for one block through ``state`` (with a type) or ``online`` ("1")."""

    block: Annotated[int, U32, Res.BLOCK]
    online_type: Annotated[OnlineType, U8]
    attr: Annotated[Attr, U8]
    source: Annotated[Source, U8]


@event(0x17, "request")
class OfflineBlock(NamedTuple):
    """Offline request for one block through ``state`` ("offline") or ``online`` ("0")."""

    block: Annotated[int, U32, Res.BLOCK]
    attr: Annotated[Attr, U8]
    source: Annotated[Source, U8]


@event(0x18, "inject")
class InjectFailure(NamedTuple):
    """Input fact: the next online (a notifier NACK) or offline (unmovable pages) of ``block`` fails.

    Such failures depend on what no model can know; a recorded trace carries the real answer.
    errno 0 cancels a pending injection.
    """

    block: Annotated[int, U32, Res.BLOCK]
    op: Annotated[Op, U8]
    errno: Annotated[int, U16, Res.ERRNO]


# Observations: what a real kernel showed (compared by the replayer, ignored by the model) -------------


@event(0x20, "observe")
class Result(NamedTuple):
    """The return code the previous request got from the real kernel (0 or -errno; a group id)."""

    rc: Annotated[int, S64, Res.ERRNO]


@event(0x21, "observe")
class BlockObserved(NamedTuple):
    """memoryN as sysfs showed it: state, node and valid_zones (an online block: its zone)."""

    block: Annotated[int, U32, Res.BLOCK]
    state: Annotated[BlockState, U8]
    node: Annotated[int, S16, Res.NODE]
    valid_zones: Annotated[tuple[ZoneType, ...], ZONES]


@event(0x22, "observe", repeats=False)
class ZoneObserved(NamedTuple):
    """One zone of /proc/zoneinfo."""

    node: Annotated[int, U16, Res.NODE]
    zone: Annotated[ZoneType, U8]
    present: Annotated[int, U64, Res.PAGES]
    spanned: Annotated[int, U64, Res.PAGES]
    start_pfn: Annotated[int, U64]
    managed: Annotated[int, U64, Res.PAGES]


@event(0x23, "observe", repeats=False)
class DeviceObserved(NamedTuple):
    """A memory device as the host saw it (virtio-mem requested/plugged size, DIMM size)."""

    device: Annotated[str, STR]
    requested: Annotated[int, U64, Res.SIZE]
    plugged: Annotated[int, U64, Res.SIZE]


@event(0x30, "mark", repeats=False)
class Mark(NamedTuple):
    """A free-form mark, e.g. a scenario step boundary."""

    text: Annotated[str, STR]


Loss = NamedTuple("Loss", [("count", Annotated[int, U32]), ("reason", Annotated[str, STR])])  # noqa: UP014
Loss.__doc__ = """The recorder knows it missed ``count`` events here (e.g. a uevent socket overrun)."""
event(0x31, "mark", repeats=False)(Loss)


@event(0x32, "mark", repeats=False)
class StateDigest(NamedTuple):
    """Digest of the model-visible state after the previous event (traces.digest.state_digest)."""

    digest: Annotated[int, U64]


Event = (
    BootMachine
    | BootParams
    | BootZone
    | BootGroup
    | BootBlocks
    | BootUnknown
    | ParamWrite
    | GroupRegister
    | GroupUnregister
    | AddMemory
    | RemoveMemory
    | OfflineAndRemoveMemory
    | OnlineBlock
    | OfflineBlock
    | InjectFailure
    | Result
    | BlockObserved
    | ZoneObserved
    | DeviceObserved
    | Mark
    | Loss
    | StateDigest
)


def pack_zones(zones: tuple[ZoneType, ...]) -> int:
    """A valid_zones list as its u32 wire value (byte i = i-th zone, 0xFF = none)."""
    if len(zones) > 4 or ZoneType.NONE in zones:
        raise ValueError(f"a zone list holds at most 4 real zones ('none' is the empty list), got {zones}")
    value = 0xFFFFFFFF
    for i, z in enumerate(zones):
        value = (value & ~(0xFF << (8 * i))) | (int(z) << (8 * i))
    return value


def unpack_zones(value: int) -> tuple[ZoneType, ...]:
    """The u32 wire value of a valid_zones list as zones; ValueError if malformed."""
    zones = []
    for i in range(4):
        b = (value >> (8 * i)) & 0xFF
        if b == 0xFF:
            if value >> (8 * i) != (0xFFFFFFFF >> (8 * i)):
                raise ValueError(f"zone list {value:#010x} has a zone after its end")
            break
        zones.append(ZoneType(b))
    return tuple(zones)


def _boot_blocks_bound(ev: BootBlocks) -> str | None:
    if ev.first + ev.count > MAX_BLOCKS:
        return f"blocks {ev.first}+{ev.count} end beyond block {MAX_BLOCKS - 1}, the last one a {PHYS_ADDR_BITS}-bit physical address space holds"
    return None


def _removal_bound(ev: RemoveMemory | OfflineAndRemoveMemory) -> str | None:
    if ev.start + ev.size > PHYS_ADDR_END:
        return f"range [{ev.start:#x}, {ev.start + ev.size:#x}) ends beyond the {PHYS_ADDR_BITS}-bit physical address space: no memory to remove there"
    return None


def _zone_observed_bound(ev: ZoneObserved) -> str | None:
    return "NONE is no zone: /proc/zoneinfo shows DMA, DMA32, Normal and Movable" if ev.zone is ZoneType.NONE else None


# Record-level bounds: what no real machine can have, refused by the reader and the writer before
# anything is allocated or looped over (field named, problem or None). An add_memory beyond the
# address space is not among them: the kernel refuses it itself (mhp_range_allowed, -E2BIG), first.
BOUNDS: dict[type, tuple[str, typing.Callable[[typing.Any], str | None]]] = {
    BootBlocks: ("count", _boot_blocks_bound),
    RemoveMemory: ("size", _removal_bound),
    OfflineAndRemoveMemory: ("size", _removal_bound),
    ZoneObserved: ("zone", _zone_observed_bound),
}


def out_of_bounds(ev: typing.Any) -> tuple[str, str] | None:
    """(field, problem) if ``ev`` describes what no real machine can have, else None."""
    bound = BOUNDS.get(type(ev))
    if bound is None:
        return None
    problem = bound[1](ev)
    return None if problem is None else (bound[0], problem)
