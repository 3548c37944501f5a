"""The 7.2 profile: which profile a kernel release gets (and why), and CMA pages in the auto-movable statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fuzz.check import DIFF_PAIRS, check_events, decode, parse_mode
from replay.cli import main
from replay.model.profiles import PROFILES, choose_profile, get_profile
from replay.replayer import replay_file
from tests.helpers import BP, GIB, block_zone, boot, ideal_events, plug_dimm
from traces.events import BootZone, OnlineType, ZoneType
from traces.header import TraceHeader
from traces.reader import TraceReader
from traces.writer import TraceWriter

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("release", "profile", "why"),
    [
        ("6.1.0-56-amd64", "6.1", ""),
        ("6.12.117+deb12-amd64", "6.12", ""),
        ("7.2.13+deb14-amd64", "7.2", ""),
        ("5.10.0-30-amd64", "6.1", "older than the auto-movable online policy"),
        ("5.15.0", "6.1", "no mem->zone"),
        ("6.5.3", "6.1", "EHWPOISON"),
        ("6.8.0-45-generic", "6.12", "per-block memmap_on_memory"),
        ("7.1.3", "6.12", "CONFIG_CMA"),
        ("7.3.4", "7.2", "newer than every profile"),
        ("1192.6.0", "7.2", "newer than every profile"),  # found by the commands fuzz target: no upper bound to fall off
        ("6.99999999999999999999", "6.12", "CONFIG_CMA"),
        ("", "6.1", "names no kernel release"),
        ("linux", "6.1", "no kernel version"),
    ],
)
def test_a_release_gets_its_series_profile_or_the_nearest_with_a_reason(release: str, profile: str, why: str) -> None:
    c = choose_profile(release)
    assert c.profile.name == profile
    assert (why in c.reason) if why else c.reason == ""


def test_profiles_are_data_checked_against_debian_configs() -> None:
    """Debian amd64 configs: 6.1 leaves auto-online off, 6.12 and 7.2 build ONLINE_AUTO; only 7.2 has CMA."""
    assert [(p.name, p.default_online_type, p.cma) for p in PROFILES.values()] == [
        ("6.1", OnlineType.OFFLINE, False),
        ("6.12", OnlineType.ONLINE, False),
        ("7.2", OnlineType.ONLINE, True),
    ]
    assert get_profile("7.2").memmap_per_block and get_profile("7.2").acpi_always_requests_memmap


def with_cma(pages: int) -> list:
    """§7's idealised VM with ``pages`` of its Normal zone activated as CMA at boot (cma=)."""
    events = ideal_events()
    events[3] = BootZone(0, ZoneType.NORMAL, 32 * BP, 16 * BP, 16 * BP, 16 * BP, pages)
    return events


@pytest.mark.parametrize(("profile", "third_dimm"), [("6.1", "Movable"), ("6.12", "Movable"), ("7.2", "Normal")])
def test_cma_pages_count_as_movable_only_on_a_kernel_with_cma(profile: str, third_dimm: str) -> None:
    """§3.5 with 32 MiB of CMA: kernel_early = K - 8192, movable starts at 8192. The third 4 GiB DIMM
    (blocks 112-143) then needs 3,153,920 <= 301 x 1,040,384 // 100 = 3,131,555: false on 7.2.
    6.1 and 6.12 are built without CONFIG_CMA: the pages are ordinary kernel memory there."""
    k = boot(with_cma(8192), profile=profile)
    for i in range(3):
        plug_dimm(k, 48 + 32 * i)
    assert {block_zone(k, b) for b in range(48, 112)} == {"Movable"}
    assert {block_zone(k, b) for b in range(112, 144)} == {third_dimm}
    assert k.m.nodes[0].zones[ZoneType.NORMAL].cma_pages == (8192 if profile == "7.2" else 0)


def test_without_cma_pages_7_2_decides_as_6_12() -> None:
    """The seed DIMM example: no CMA area (Debian's CMA_SIZE_MBYTES=0), identical layouts."""
    layouts = []
    for profile in ("6.12", "7.2"):
        k = boot(ideal_events(), profile=profile)
        for i in range(5):
            plug_dimm(k, 48 + 32 * i, 4 * GIB)
        layouts.append([block_zone(k, b) for b in range(48, 208)])
    assert layouts[0] == layouts[1] and layouts[0][:96] == ["Movable"] * 96 and layouts[0][96:] == ["Normal"] * 64


def retitled(src: Path, dst: Path, release: str) -> Path:
    """``src`` with another kernel release in its header."""
    with TraceReader(src) as r:
        header: TraceHeader = r.header
        records = r.read_all()
    header.kernel_release = release
    with TraceWriter(dst, header) as w:
        for rec in records:
            w.write_record(rec)
    return dst


def test_replay_names_the_profile_it_chose_and_why(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    trace = retitled(ROOT / "corpus" / "real" / "6.12" / "seed-dimm.mhpt", tmp_path / "t.mhpt", "7.4.0-1-amd64")
    res = replay_file(str(trace))
    assert res.profile == "7.2" and res.kernel_release == "7.4.0-1-amd64" and "newer than every profile" in res.profile_reason
    assert res.divergence_count == 0  # the 6.12 run replays on 7.2 too: nothing observable differs here
    rc = main(["replay", "--json", str(trace)])
    out, err = capsys.readouterr()
    doc = json.loads(out)["traces"][0]
    assert rc in (0, 1) and doc["profile"] == "7.2" and doc["profile_reason"] == res.profile_reason
    assert f"mhp replay: {trace}: kernel 7.4.0-1-amd64: profile 7.2: no profile for 7.4" in err
    main(["replay", str(ROOT / "corpus" / "real" / "6.12" / "seed-dimm.mhpt")])
    out, err = capsys.readouterr()
    assert "(profile 6.12)" in out and "mhp replay:" not in err  # a release of a profile's own series: no note


REAL = sorted((ROOT / "corpus" / "real").glob("6.*/*.mhpt"))


@pytest.mark.parametrize("path", REAL, ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_7_2_behaves_as_6_12_on_every_real_trace(path: Path) -> None:
    """--diff 6.12,7.2 over the real corpus: no CMA area anywhere, so no difference at all."""
    events = decode(path.read_bytes())
    assert events is not None
    assert check_events(events, parse_mode("6.12", None, "6.12,7.2")) is None


def test_diff_pairs_cover_the_three_profiles() -> None:
    assert DIFF_PAIRS == ("6.1,6.12", "6.1,7.2", "6.12,7.2")
    with pytest.raises(ValueError, match=r"6\.12,7\.2"):
        parse_mode("6.1", None, "7.2")


@pytest.mark.parametrize("pair", ["6.1,7.2", "6.12,7.2"])
def test_differential_fuzzing_finds_cma_between_7_2_and_the_others(pair: str) -> None:
    """A boot snapshot with 32 MiB of CMA in Normal: 7.2 counts it as movable from the first decision on."""
    first = pair.split(",")[0]
    events = decode((ROOT / "corpus" / "real" / first / "seed-dimm.mhpt").read_bytes())  # the first profile's own requests
    assert events is not None
    events = [ev._replace(cma=8192) if isinstance(ev, BootZone) and ev.zone is ZoneType.NORMAL else ev for ev in events]
    mode = parse_mode(first, None, pair)
    hit = check_events(events, mode)
    assert hit is not None and hit.signature == f"DIFF:AddMemory:numbers:{pair.replace(',', '-vs-')}"
    assert mode.diff == "7.2"
