"""The README's Python snippets run as written, in order, in one namespace."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_snippets(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


def test_the_readme_python_snippets_run(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the training snippet writes runs/python_api here
    snippets = python_snippets(README)
    assert len(snippets) >= 3
    namespace: dict = {}
    for code in snippets:
        exec(compile(code, str(README), "exec"), namespace)
    assert (tmp_path / "runs" / "python_api" / "best.pt").is_file()
    assert "torch.Size([2, 10])" in capsys.readouterr().out
