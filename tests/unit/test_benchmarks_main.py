"""`python -m benchmarks` writes docs/benchmarks.md's results block only from a run of all its sections."""

from __future__ import annotations

import pytest

import benchmarks.__main__ as bench


@pytest.fixture
def written(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str]]:
    """Stand-in sections (their tables, no measuring) and the blocks `main` writes, instead of the doc."""
    monkeypatch.setattr(bench, "_env", lambda *a: ("ENV TABLE", {}))
    monkeypatch.setattr(bench, "training_table", lambda *a: ("TRAINING TABLE", {}))
    monkeypatch.setattr(bench, "quick_test_table", lambda *a: ("QUICK TABLE", {}))
    monkeypatch.setattr(bench, "fleet_table", lambda *a: ("FLEET TABLE", {}))
    monkeypatch.setattr(bench, "_placement", lambda *a: ("PLACEMENT TABLE", {}))
    monkeypatch.setattr(bench, "machine", lambda: "test machine")
    blocks: list[tuple[str, str]] = []
    monkeypatch.setattr(bench, "write_results", lambda text, begin, end: blocks.append((begin, text)))
    return blocks


def test_a_subset_of_the_results_block_leaves_it_alone(written, capsys) -> None:
    bench.main(["--only", "training"])
    assert written == []
    captured = capsys.readouterr()
    assert "TRAINING TABLE" in captured.out
    assert "not written" in captured.err and "env, quick_test" in captured.err


def test_the_whole_results_block_is_written(written) -> None:
    bench.main(["--only", "env,training,quick_test"])
    assert [begin for begin, _ in written] == [bench.BEGIN]
    assert all(table in written[0][1] for table in ("ENV TABLE", "TRAINING TABLE", "QUICK TABLE"))


def test_fleet_alone_writes_its_own_block_only(written) -> None:
    bench.main(["--only", "fleet"])
    assert [begin for begin, _ in written] == [bench.FLEET_BEGIN]


def test_the_placement_section_is_printed_and_written_nowhere(written, capsys) -> None:
    """Its table in docs/benchmarks.md is kept by hand, outside the blocks, with the runs it compares."""
    bench.main(["--only", "env,training,quick_test,placement"])
    assert [begin for begin, _ in written] == [bench.BEGIN]
    assert "PLACEMENT TABLE" not in written[0][1]
    assert "PLACEMENT TABLE" in capsys.readouterr().out


def test_the_agents_table_is_written_only_whole(tmp_path, capsys) -> None:
    """`python -m benchmarks.agents --write` with some cells would drop the others' rows: refused
    before any training, and likewise for a --report of some cells' results."""
    import json

    import benchmarks.agents as agents

    with pytest.raises(SystemExit) as exit_info:
        agents.main(["--cells", "maze", "--write"])
    assert exit_info.value.code == 2
    assert "--write replaces the whole agents table" in capsys.readouterr().err
    results = tmp_path / "results-0.json"
    run = agents.SeedRun("maze", 0, 100, [], 1.0, [], {policy: [] for policy in agents.POLICIES})
    results.write_text(json.dumps([agents.asdict(run)]))
    with pytest.raises(SystemExit):
        agents.main(["--report", str(results), "--write"])
    assert "these runs have only maze of its cells" in capsys.readouterr().err
