"""Scenario files and ``mhp simulate``: output formats, step selection and clear errors with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from replay.cli import main
from tests.test_observed import SCENARIOS

GOOD = """
name = "t"
[machine]
preset = "qemu-q35-4G"
[kernel]
cmdline = "memhp_default_state=online memory_hotplug.online_policy=auto-movable"
[[step]]
dimm = "1G"
[[step]]
offline = "48-49"
[[step]]
online = 48
type = "online_kernel"
"""


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def test_simulate_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    rc, out, _ = run(["simulate", str(SCENARIOS / "seed-dimm.toml")], capsys)
    assert rc == 0
    assert "Memory block 48-79:     Movable (dimm0)" in out
    last = out[out.rindex("== step 5") :]
    assert "Memory block 176-207:   Normal (dimm4)" in last and "node 0 Movable  present   3145728  managed   3145728" in last


def test_simulate_json_and_step(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "s.toml"
    f.write_text(GOOD)
    rc, out, _ = run(["simulate", str(f), "--json", "--step", "2"], capsys)
    assert rc == 0
    doc = json.loads(out)
    (step,) = doc["steps"]
    assert step["step"] == 2
    offline = [r for r in step["runs"] if r["state"] == "offline"]
    assert offline == [{"first": 48, "last": 49, "node": 0, "state": "offline", "zone": None, "group": "dimm0", "valid_zones": ["Movable", "Normal"]}]
    movable = next(z for z in step["zones"] if z["zone"] == "Movable")
    pages = 6 * 32768
    assert movable == {"node": 0, "zone": "Movable", "present": pages, "managed": pages, "managed_since_boot": pages, "spanned": pages, "start_pfn": 50 * 32768}
    rc, out, _ = run(["simulate", str(f), "--step", "3"], capsys)
    assert "Memory block 48:        Normal (dimm0)" in out and "offline [Normal Movable]" in out


@pytest.mark.parametrize(
    ("text", "expect"),
    [
        ("[machine\npreset = 1", ": line 1:"),
        ("[machine]\npreset = 'nope'", "machine.preset: expected one of qemu-q35-4G"),
        ("[machine]\npreset = 'qemu-q35-4G'\n\n[[step]]\ndimm = '4Q'", ": line 5: step[0].dimm: expected a size"),
        ("[machine]\npreset = 'qemu-q35-4G'\n[[step]]\ndimm = '4G'\n[[step]]\nonline = 48\nkind = 'x'", ": line 7: step[1]: unknown key(s) kind"),
        ("[machine]\npreset = 'qemu-q35-4G'\n[[step]]\ndimm = '4G'\n[[step]]\nonline = 48\n\ntype = 'sideways'", ": line 8: step[1].type: expected one of"),
        ("name = 'x'\nbogus = 1\n[machine]\npreset = 'qemu-q35-4G'", ": line 2: bogus: unknown top-level key"),
        ("[machine]\npreset = 'qemu-q35-4G'\n[[step]]\n\nonline = '9-3'", ": line 5: step[0].online: expected a block id or a range"),
        ("[machine]\npreset = 'qemu-q35-4G'\n[[step]]\nvmem = 'vm9'\nsize = '1G'", "step[0].vmem: expected one of"),
        ("[machine]\npreset = 'qemu-q35-4G'\n[[step]]\noffline = 48\nfails = 'EWHAT'", "expected an errno name"),
        ("[machine]\npreset = 'qemu-q35-4G'\n[[step]]\nonline = '9-3'", "expected a block id or a range"),
        ("[machine]\npreset = 'qemu-q35-4G'\n[[step]]\ndimm = '1G'\nonline = 3", "exactly one action key"),
        ("[machine]\npreset = 'qemu-q35-4G'\nextra = 1", "a preset takes no other keys"),
        ("[kernel]\nprofile = '6.1'", "missing [machine] table"),
        ("[machine]\npreset = 'qemu-q35-4G'\n[kernel]\nprofile = '5.4'", "kernel.profile: expected one of 6.1, 6.12"),
        ("[machine]\npreset = 'qemu-q35-4G'\n[[step]]\nunplug = 'dimm7'", "no plugged DIMM 'dimm7'"),
    ],
)
def test_bad_scenarios_give_one_line_and_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, expect: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    rc, _, err = run(["simulate", str(f)], capsys)
    assert rc == 2
    assert err.count("\n") == 1 and str(f) in err and expect in err, err


def test_missing_file_and_step_out_of_range(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, _, err = run(["simulate", str(tmp_path / "none.toml")], capsys)
    assert rc == 2 and "cannot read" in err
    rc, _, err = run(["simulate", str(SCENARIOS / "seed-dimm.toml"), "--step", "9"], capsys)
    assert rc == 2 and "out of range 0..5" in err


@pytest.mark.parametrize("profile", ["6.1", "6.12"])
@pytest.mark.parametrize("path", sorted(SCENARIOS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_corpus_scenario_raises_exactly_its_expected_findings(path: Path, profile: str) -> None:
    from replay.simulate import simulate
    from traces.scenario import load_scenario

    scenario = load_scenario(path)
    results = list(simulate(scenario, profile))
    assert len(results) == len(scenario.steps) + 1
    assert {f.signature for r in results for f in r.findings} == set(scenario.expect_findings)
