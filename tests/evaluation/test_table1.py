"""minidyn.evaluation.table1: the one layout of Table 1's Markdown and CSV (compare and study reports)."""
from minidyn.evaluation import table1


def test_markdown_is_a_head_a_separator_and_a_line_per_row():
    text = table1.markdown(["Group", "Clean"], [["standard", "99.10"], ["dynamic", "98.50 ± 0.20 (n=3)"]])
    assert text == ("| Group | Clean |\n|---|---|\n| standard | 99.10 |\n"
                    "| dynamic | 98.50 ± 0.20 (n=3) |")
    assert table1.markdown(["a"], []) == "| a |\n|---|"


def test_csv_writes_none_as_an_empty_field_with_the_line_ending_asked_for():
    rows = [{"group": "standard", "clean_std": None, "clean_n": 1}, {"group": "a,b", "clean_std": 0.5, "clean_n": 2}]
    assert table1.csv_text(rows) == 'group,clean_std,clean_n\r\nstandard,,1\r\n"a,b",0.5,2\r\n'
    assert table1.csv_text(rows, lineterminator="\n") == 'group,clean_std,clean_n\nstandard,,1\n"a,b",0.5,2\n'
    assert table1.csv_text([]) == ""
