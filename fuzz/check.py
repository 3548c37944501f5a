"""One verdict per fuzz input, shared by the harness, the campaign and the minimiser.

An input is a .mhpt trace. Undecodable bytes and impossible snapshots are invalid (no verdict).
A valid trace runs through the model with every oracle; in differential mode a second model
(another profile, or the reference beside a seeded variant) runs beside it and the first
behavioural difference counts, as do findings the second model does not raise at the same event.
The first difference ends the comparison: the two models' states have diverged, so everything
after it is a consequence of that one cause.
A Python exception inside the model is a model crash, with its own signature.
"""

from __future__ import annotations

import io
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from fuzz.path import decision_path, known_paths
from replay.differential import compare_outcomes
from replay.model.kernel import Kernel
from replay.model.profiles import PROFILES, get_profile
from replay.model.variants import NEEDS_PROFILE
from traces.codec import decode_payload
from traces.errors import TraceFormatError
from traces.header import CHUNK_HEADER, CHUNK_MAGIC, FIXED_HEADER_SIZE, MAX_CHUNK, chunk_crc
from traces.reader import TraceReader

KNOWN_HEADERS_MAX = 256
_known_headers: set[bytes] = set()  # header bytes TraceReader accepted (fuzz inputs share a handful)
DECODED_MAX, DECODED_INPUT_MAX = 256, 16384
_decoded: dict[bytes, tuple[Any, ...] | None] = {}  # recent small inputs and their events: libFuzzer mutates an input right after running it


DIFF_PAIRS = tuple(f"{a},{b}" for a, b in combinations(PROFILES, 2))  # --diff between profiles: 6.1,6.12 6.1,7.2 6.12,7.2


@dataclass(frozen=True, slots=True)
class Mode:
    """What a fuzz run checks: oracles on ``profile`` and, if ``diff`` is set, a second model."""

    profile: str = "6.1"
    variant: str | None = None  # the model under test runs this seeded variant
    diff: str | None = None  # a profile ("6.12", "7.2") or "ref": compare with that profile / with the reference model

    def describe(self) -> str:
        parts = [f"profile {self.profile}"]
        if self.variant:
            parts.append(f"variant {self.variant}")
        if self.diff:
            parts.append(f"diff against {self.diff}")
        return ", ".join(parts)


def parse_mode(profile: str, variant: str | None, diff: str | None) -> Mode:
    """The Mode of the ``--profile``, ``--variant`` and ``--diff`` options (``mhp fuzz``, ``mhp
    minimize``): ``--diff A,B`` runs profile A (its variant, if any) against profile B and sets the
    profile to A; ``--diff ref`` runs the variant against the reference model of ``profile``."""
    mode = _parse_mode(profile, variant, diff)
    needs = NEEDS_PROFILE.get(variant or "")
    if needs and mode.profile != needs:
        raise ValueError(f"--variant {variant} changes code only profile {needs} has: give --profile {needs}")
    return mode


def _parse_mode(profile: str, variant: str | None, diff: str | None) -> Mode:
    """parse_mode without the variant's profile check."""
    if not diff:
        return Mode(profile, variant)
    if diff == "ref":
        if not variant:
            raise ValueError("--diff ref compares a --variant with the reference model: give --variant")
        return Mode(profile, variant, "ref")
    a, comma, b = diff.partition(",")
    if not comma:
        raise ValueError(f"--diff {diff!r}: give two profiles A,B ({', '.join(DIFF_PAIRS)}) or ref")
    return Mode(get_profile(a).name, variant, get_profile(b).name)


@dataclass(frozen=True, slots=True)
class Hit:
    """A problem the input exposes: its signature and the event index where it shows."""

    signature: str
    index: int
    message: str
    path: str = ""  # fuzz.path.decision_path of the hit


def header_length(data: bytes) -> int:
    """The header length a trace's fixed header states (0 if too short to say)."""
    return int.from_bytes(data[16:20], "little") if len(data) >= FIXED_HEADER_SIZE else 0


def decode(data: bytes) -> list[Any] | None:
    """The events of a fuzz input, or None if it is not a valid trace (the last DECODED_MAX inputs
    of up to DECODED_INPUT_MAX bytes remembered: the harness runs a mutant, then the mutator reads it)."""
    if len(data) > DECODED_INPUT_MAX:
        return _decode(data)
    if data in _decoded:
        known = _decoded[data]
        return None if known is None else list(known)
    events = _decode(data)
    if len(_decoded) >= DECODED_MAX:
        del _decoded[next(iter(_decoded))]  # the oldest
    _decoded[data] = None if events is None else tuple(events)
    return events


def _decode(data: bytes) -> list[Any] | None:
    """decode, uncached."""
    events = _decode_plain(data)
    if events is not None:
        return events
    try:
        with TraceReader(io.BytesIO(data)) as r:
            events = list(r.events())
    except TraceFormatError:
        return None
    if len(_known_headers) >= KNOWN_HEADERS_MAX:
        _known_headers.clear()
    _known_headers.add(data[: header_length(data)])
    return events


def _decode_plain(data: bytes) -> list[Any] | None:
    """The events of a trace in the plain shape the mutator writes (a header TraceReader already
    accepted, then intact chunks with consecutive sequence numbers and no index); None for
    anything else, which TraceReader then decides (same events, same verdicts)."""
    pos = header_length(data)
    if data[:pos] not in _known_headers:
        return None
    events: list[Any] = []
    end = len(data)
    hs = CHUNK_HEADER.size
    next_seq: int | None = None
    while pos < end:
        if end - pos < hs:
            return None
        magic, first_seq, count, length, crc = CHUNK_HEADER.unpack_from(data, pos)
        if magic != CHUNK_MAGIC or length > MAX_CHUNK or pos + hs + length > end or not count:
            return None
        payload = data[pos + hs : pos + hs + length]
        if chunk_crc(data[pos : pos + 20], payload) != crc or (next_seq is not None and first_seq != next_seq):
            return None
        try:
            cols = decode_payload(payload, count, pos + hs, len(events))
        except TraceFormatError:
            return None
        if cols.seqs != range(first_seq, first_seq + count):
            return None
        events += cols.events
        next_seq = first_seq + count
        pos += hs + length
    return events


STATE_FEATURES = 5 * 4 * 2 * 6 * 4  # zone x online type x policy x ratio band x group kind


def state_feature(k: Kernel, out: Any) -> int | None:
    """A number for the model state a decision reached: zone x online type x policy x ratio band x
    group kind (0..STATE_FEATURES - 1), so the fuzzer can be rewarded for new model states (like kernel signal)."""
    if not out.decisions:
        return None
    d = out.decisions[-1]
    mem = k.m.blocks.get(d.block)
    g = None if mem is None else mem.group
    gkind = 0 if g is None else 1 if not g.is_dynamic else 2 if g.pages == k.m.block_pages else 3
    r = k.m.params.auto_movable_ratio
    band = 0 if r == 0 else 1 if r < 100 else 2 if r < 301 else 3 if r == 301 else 4 if r < 1 << 31 else 5
    zone = min(int(d.zone), 4)
    return (((zone * 4 + int(d.online_type)) * 2 + int(k.m.params.online_policy)) * 6 + band) * 4 + gkind


def check_events(events: list[Any], mode: Mode, ignore: frozenset[str] = frozenset(), feedback: Callable[[int], object] | None = None) -> Hit | None:
    """The first hit (finding, difference or crash) whose signature is not in ``ignore``, nor
    given there with the hit's decision path (``SIG @ PATH``, fuzz.path); ``feedback`` gets the
    state_feature of every zone decision.

    In differential mode the input is checked up to its first difference only: that difference
    is the hit, or nothing if it is ignored (the models have diverged; later differences and
    findings follow from it). Findings of the events before it count.
    """
    prof = get_profile(mode.profile)
    paths = known_paths(ignore) if ignore else {}
    variants = frozenset({mode.variant}) if mode.variant else frozenset()
    k = Kernel(prof, variants=variants)
    other = None
    if mode.diff:
        other = Kernel(get_profile(mode.profile if mode.diff == "ref" else mode.diff))
    i = -1
    try:
        for i, ev in enumerate(events):
            kind = ev.KIND
            if other is not None and kind in ("boot", "request", "inject"):
                a = k.apply(ev)
                b = other.apply(ev)
                d = compare_outcomes(i, ev, k, a, other, b)
                if d is not None:
                    sig = f"{d.signature}:{mode.variant or mode.profile}-vs-{mode.diff}"
                    if sig in ignore:
                        return None
                    path = decision_path(k.m, ev, a)
                    return None if path in paths.get(sig, ()) else Hit(sig, i, d.describe(), path)
                theirs = {f.signature for f in b.findings}  # differential: only findings the other model lacks
                findings = [f for f in a.findings if f.signature not in theirs]
            elif kind in ("boot", "request", "inject"):
                a = k.apply(ev)
                findings = a.findings
            else:
                continue
            if feedback is not None:
                feature = state_feature(k, a)
                if feature is not None:
                    feedback(feature)
            for f in findings:
                if f.signature not in ignore:
                    path = decision_path(k.m, ev, a, f.context.get("block"))
                    if path not in paths.get(f.signature, ()):
                        return Hit(f.signature, i, f.message, path)
    except ValueError:  # SnapshotError: a snapshot no machine can be in
        return None
    except Exception as e:  # a crash of the model itself
        frame = traceback.extract_tb(e.__traceback__)[-1]
        return Hit(f"CRASH:{type(e).__name__}:{frame.name}", i, f"{type(e).__name__}: {e} at {frame.filename}:{frame.lineno}")
    return None


def check_input(data: bytes, mode: Mode, ignore: frozenset[str] = frozenset(), feedback: Callable[[int], object] | None = None) -> Hit | None:
    """check_events on raw bytes (None for invalid inputs)."""
    events = decode(data)
    return None if events is None else check_events(events, mode, ignore, feedback)


def shadowing(events: list[Any], mode: Mode, signature: str, ignore: frozenset[str] = frozenset()) -> list[str]:
    """The signatures past ``ignore`` a trace hits before ``signature``: they must be ignored to see
    it (the per-node ratio oracle, say, fires after the system-wide one on a one-node machine).
    ValueError if the trace never hits ``signature``."""
    seen: list[str] = []
    while (hit := check_events(events, mode, ignore | frozenset(seen))) is not None and hit.signature != signature:
        seen.append(hit.signature)
    if hit is None:
        why = (
            "; a differential check ends at its first difference: without --diff, later findings count"
            if mode.diff and any(s.startswith("DIFF:") for s in seen)
            else ""
        )
        raise ValueError(f"the input does not produce {signature} (it hits {', '.join(seen) or 'nothing'}{why})")
    return sorted(seen)
