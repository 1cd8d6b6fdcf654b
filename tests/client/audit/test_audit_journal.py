"""The journal and atomic writes: what a killed audit leaves behind is either whole or ignored."""

import json
import math

import numpy as np
import pytest

from onnxplain.client.audit.journal import Journal, remove_temporaries, save_array, write_atomically


def test_lines_round_trip_and_undefined_values_become_null(tmp_path):
    journal = Journal(tmp_path / "results.jsonl")
    assert journal.read() == []
    journal.append({"image": "a.png", "metrics": {"deletion": 0.25, "pointing_game": math.nan}})
    journal.append({"image": "b.png", "values": [1.0, math.inf]})
    assert journal.read() == [
        {"image": "a.png", "metrics": {"deletion": 0.25, "pointing_game": None}},
        {"image": "b.png", "values": [1.0, None]},
    ]
    for line in journal.path.read_text().splitlines():
        json.loads(line, parse_constant=pytest.fail)  # strict JSON: no NaN or Infinity tokens


def test_a_torn_last_line_is_cut_off_and_the_next_line_starts_clean(tmp_path):
    journal = Journal(tmp_path / "results.jsonl")
    journal.append({"image": "a.png"})
    with journal.path.open("a") as file:
        file.write('{"image": "b.p')  # killed mid-write
    assert journal.read() == [{"image": "a.png"}]
    journal.append({"image": "c.png"})
    assert journal.read() == [{"image": "a.png"}, {"image": "c.png"}]
    assert journal.path.read_text() == '{"image": "a.png"}\n{"image": "c.png"}\n'


def test_a_complete_line_without_its_newline_counts_as_torn(tmp_path):
    journal = Journal(tmp_path / "results.jsonl")
    journal.path.write_text('{"image": "a.png"}\n{"image": "b.png"}')
    assert journal.read() == [{"image": "a.png"}]


def test_damage_in_the_middle_is_an_error_not_silently_dropped_work(tmp_path):
    journal = Journal(tmp_path / "results.jsonl")
    journal.path.write_text('{"image": "a.png"}\n{"ima\n{"image": "c.png"}\n')
    with pytest.raises(ValueError, match="damaged line"):
        journal.read()


def test_atomic_writes_replace_whole_files_and_leave_no_temporary(tmp_path):
    target = tmp_path / "x.png"
    write_atomically(target, b"old")
    write_atomically(target, b"new contents")
    assert target.read_bytes() == b"new contents"
    save_array(tmp_path / "m.npy", np.arange(6, dtype=np.float32).reshape(2, 3))
    np.testing.assert_array_equal(np.load(tmp_path / "m.npy"), np.arange(6).reshape(2, 3))
    assert sorted(path.name for path in tmp_path.iterdir()) == ["m.npy", "x.png"]


def test_leftover_temporaries_of_a_killed_run_are_removed(tmp_path):
    (tmp_path / ".tmp-123-a.npy").write_bytes(b"half")
    (tmp_path / "a.npy").write_bytes(b"whole")
    remove_temporaries(tmp_path)
    assert [path.name for path in tmp_path.iterdir()] == ["a.npy"]
