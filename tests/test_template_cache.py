"""Report templates are compiled once and kept in the user's cache folder; never a reason for a run to fail."""
from __future__ import annotations

import jinja2
import pytest

from vfio_certify.model import HostResult, RunResult
from vfio_certify.report import html
from vfio_certify.report.template_cache import bytecode_cache


def _page() -> str:
    html._environment.cache_clear()  # a new run: a fresh environment, as a new process has
    return html.render_certification_page(RunResult(started_at="t", hosts=[HostResult(host="kvm1", source="local")]))


@pytest.fixture
def cache_home(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    yield tmp_path / "cache" / "vfio-certify" / "templates"
    html._environment.cache_clear()


def test_the_second_run_renders_without_compiling(cache_home, monkeypatch):
    first = _page()
    assert len(list(cache_home.iterdir())) >= 2  # the page and the templates it includes

    def no_compiling(*args, **kwargs):
        raise AssertionError("a template was compiled although its compiled form was cached")

    monkeypatch.setattr(jinja2.Environment, "compile", no_compiling)
    assert _page() == first


def test_an_edited_template_is_compiled_afresh(cache_home, tmp_path, monkeypatch):
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "t.j2").write_text("one {{ x }}")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates)), bytecode_cache=bytecode_cache())
    assert env.get_template("t.j2").render(x=1) == "one 1"
    (templates / "t.j2").write_text("two {{ x }}")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates)), bytecode_cache=bytecode_cache())
    assert env.get_template("t.j2").render(x=1) == "two 1"


def test_an_unwritable_cache_folder_only_means_compiling(tmp_path, monkeypatch):
    blocker = tmp_path / "cache"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("XDG_CACHE_HOME", str(blocker))
    assert bytecode_cache() is None
    html._environment.cache_clear()
    try:
        assert "kvm1" in _page()
    finally:
        html._environment.cache_clear()
