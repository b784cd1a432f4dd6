"""The shared JSONL reader (bgpo/jsonl.py)."""

import pytest

from bgpo.errors import BGPOError
from bgpo.jsonl import iter_jsonl


def test_rows_with_line_numbers_skip_blank_lines(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text('{"step": 1}\n\n{"step": 2}\n')
    assert list(iter_jsonl(path)) == [(1, {"step": 1}), (3, {"step": 2})]


@pytest.mark.parametrize("text, message", [('{"step": 1}\n{"st', r"a.jsonl: line 2: not valid JSON"),
                                           ('[1, 2]\n', r"a.jsonl: line 1: not a JSON object")])
def test_bad_lines_name_file_and_line(tmp_path, text, message):
    path = tmp_path / "a.jsonl"
    path.write_text(text)
    with pytest.raises(BGPOError, match=message):
        list(iter_jsonl(path))
